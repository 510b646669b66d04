"""musllinux_1_2_aarch64 (the linux-aarch64-musl platform): the repair of a zig-linked musl wheel, and each check
of check_wheel() that only a musl wheel has, fed tiny ELF files that the pinned zig links, each sabotaged.

The real build of the target: tests/integration/builds/test_build.py (``musl_wheel``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from llama_wheels.binaries.elf import elf_facts, inspect_wheel
from llama_wheels.config.platforms import auditwheel_policy, platform
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import RepairError
from llama_wheels.plan import plan
from llama_wheels.stages.repair import (
    ZIG_MUSL_LIBC,
    allowed_system_libraries,
    check_wheel,
    rename_musl_libc,
    repair_wheel,
)
from tests.support.checkout import repo_config

MUSL = platform("linux-aarch64-musl")


GLIBC = platform("linux-aarch64")


MUSL_TAG = "py3-none-musllinux_1_2_aarch64"


def zig_elf(out: Path, target: str, code: str, *args: str) -> Path:
    """``code`` compiled and linked by the pinned zig for ``target`` (zig's cache shared with the builds)."""
    src = out.with_name(out.name + ".c")
    src.write_text(code)
    zig_cache = str(Cache.from_env().zig)
    env = {**os.environ, "ZIG_GLOBAL_CACHE_DIR": zig_cache, "ZIG_LOCAL_CACHE_DIR": zig_cache}
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", target, "-g0", "-o", str(out), str(src),
                    *args], check=True, capture_output=True, env=env, timeout=900)
    return out


USES_LIBC = "#include <string.h>\nvoid *copy(void *a, const void *b, unsigned long n) { return memcpy(a, b, n); }\n"


@pytest.fixture(scope="module")
def elves(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("elves")
    ggml = zig_elf(d / "libggml.so", "aarch64-linux-musl", USES_LIBC, "-shared")
    foreign = zig_elf(d / "libfoo.so", "aarch64-linux-musl", "int foo(void) { return 1; }\n", "-shared")
    return {
        # libllama needs the bundled libggml ($ORIGIN) and libc, as the real one does
        "llama": zig_elf(d / "libllama.so", "aarch64-linux-musl", "#include <stdlib.h>\n"
                         "void *copy(void *a, const void *b, unsigned long n);\n"
                         "void *llama(void) { void *a = malloc(8); return copy(a, a, 8); }\n", "-shared",
                         f"-L{d}", "-lggml", "-Wl,-rpath,$ORIGIN"),
        "ggml": ggml,
        "glibc": zig_elf(d / "libglibc.so", "aarch64-linux-gnu.2.17", USES_LIBC, "-shared"),
        "foreign": zig_elf(d / "libneedsfoo.so", "aarch64-linux-musl", USES_LIBC + "int foo(void);\n"
                           "int bar(void) { return foo(); }\n", "-shared", f"-L{foreign.parent}", "-lfoo"),
        # a position-independent executable that names glibc's loader (a musl one names ld-musl-aarch64)
        "glibc_interp": zig_elf(d / "exe", "aarch64-linux-musl", "int main(void) { return 0; }\n",
                                "-dynamic", "-Wl,--dynamic-linker=/lib/ld-linux-aarch64.so.1"),
    }


def wheel_of(tmp_path: Path, libs: dict[str, Path], tag: str = MUSL_TAG) -> Path:
    wheel = tmp_path / f"llama_cpp_python-0.0.1-{tag}.whl"
    tmp_path.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("llama_cpp/__init__.py", "")
        for name, path in libs.items():
            archive.write(path, f"llama_cpp/lib/{name}")
        archive.writestr("llama_cpp_python-0.0.1.dist-info/METADATA",
                         "Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: 0.0.1\n")
        archive.writestr("llama_cpp_python-0.0.1.dist-info/WHEEL",
                         f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {tag}\n")
        archive.writestr("llama_cpp_python-0.0.1.dist-info/RECORD", "")
    return wheel


def test_the_platform_is_auditwheels_musllinux_1_2_aarch64() -> None:
    assert MUSL.zig_target == "aarch64-linux-musl" and MUSL.libc == "musl"
    assert auditwheel_policy(MUSL) == "musllinux_1_2" and auditwheel_policy(GLIBC) == "manylinux_2_17"
    # auditwheel's own view of the policy: libc by Alpine's name (its policy file says libc.so)
    assert allowed_system_libraries(MUSL) == {MUSL.libc_soname, "libz.so.1"}
    assert "libc.so.6" in allowed_system_libraries(GLIBC) and "libc.so.6" not in allowed_system_libraries(MUSL)


def test_the_musl_target_is_the_default_wheel_for_musl() -> None:
    """Same switches, CMake arguments, patch series and index as linux-aarch64: only the platform differs."""
    config = repo_config()
    [glibc], [musl] = plan(config, ["linux-aarch64"], None), plan(config, ["linux-aarch64-musl"], None)
    assert musl.platform == MUSL.name and glibc.platform == GLIBC.name
    assert musl.target.switches == glibc.target.switches and musl.target.index == glibc.target.index
    assert musl.cmake_args() == glibc.cmake_args() and musl.pin.patches == glibc.pin.patches


def test_zig_links_musl_libc_as_libc_so(elves: dict[str, Path]) -> None:
    """Why the repair renames a need: zig's musl libraries need ``libc.so``, which the policy does not list."""
    facts = elf_facts("libggml.so", elves["ggml"].read_bytes())
    assert ZIG_MUSL_LIBC in facts.needed and facts.versions == () and facts.interpreter is None


def test_repair_renames_libc_and_auditwheel_tags_the_wheel_musllinux(elves: dict[str, Path], tmp_path: Path) -> None:
    """The cross repair on this glibc x86_64 machine: auditwheel reads musl and aarch64 from the libraries."""
    wheel = wheel_of(tmp_path / "built", {"libllama.so": elves["llama"], "libggml.so": elves["ggml"]},
                     tag="py3-none-linux_aarch64")
    with repair_wheel(wheel, MUSL) as repaired:
        assert repaired.name == f"llama_cpp_python-0.0.1-{MUSL_TAG}.whl"
        facts = inspect_wheel(repaired)
        needed = {lib.path: lib.needed for lib in facts.libraries}
        assert needed["llama_cpp/lib/libllama.so"] == ("libggml.so", MUSL.libc_soname)
        assert needed["llama_cpp/lib/libggml.so"] == (MUSL.libc_soname,)
        assert facts.external == (MUSL.libc_soname,)
        with zipfile.ZipFile(repaired) as archive:  # nothing grafted: libc is the system's
            assert not [n for n in archive.namelist() if ".libs/" in n]


def test_an_unrenamed_zig_libc_need_is_refused(elves: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(RepairError, match=r"neither bundled nor allowed by auditwheel's musllinux_1_2_aarch64 "
                                          r"policy: libc\.so$"):
        check_wheel(wheel_of(tmp_path, {"libggml.so": elves["ggml"]}), MUSL)


def test_a_glibc_library_in_a_musl_wheel_is_refused(elves: dict[str, Path], tmp_path: Path) -> None:
    """Sabotage: a library linked against glibc, in a wheel that says musllinux."""
    with pytest.raises(RepairError, match=r"libglibc\.so needs versioned symbols \(GLIBC_2\.17\), which no musl "
                                          r"libc defines"):
        check_wheel(wheel_of(tmp_path, {"libglibc.so": elves["glibc"]}), MUSL)


def test_repair_of_a_glibc_library_for_musl_fails(elves: dict[str, Path], tmp_path: Path) -> None:
    """The whole repair: auditwheel sees glibc and tags manylinux, which the musl platform refuses."""
    wheel = wheel_of(tmp_path / "built", {"libglibc.so": elves["glibc"]}, tag="py3-none-linux_aarch64")
    with pytest.raises(RepairError, match=r"tag is not musllinux_1_2_aarch64"), repair_wheel(wheel, MUSL):
        pass


def test_a_foreign_needed_library_is_refused(elves: dict[str, Path], tmp_path: Path) -> None:
    """Sabotage: a musl library that needs a library neither bundled nor in the policy."""
    # renamed as the repair does: libc is then allowed, libfoo is not
    renamed = rename_musl_libc(wheel_of(tmp_path, {"libneedsfoo.so": elves["foreign"]}), MUSL,
                               Path(tempfile.mkdtemp(dir=tmp_path)))
    with pytest.raises(RepairError, match=r"policy: libfoo\.so$"):
        check_wheel(renamed, MUSL)


def test_another_libcs_program_interpreter_is_refused(elves: dict[str, Path], tmp_path: Path) -> None:
    assert elf_facts("exe", elves["glibc_interp"].read_bytes()).interpreter == "/lib/ld-linux-aarch64.so.1"
    with pytest.raises(RepairError, match=r"libexe\.so names the program interpreter /lib/ld-linux-aarch64\.so\.1, "
                                          r"not musllinux_1_2_aarch64's /lib/ld-musl-aarch64\.so\.1"):
        check_wheel(wheel_of(tmp_path, {"libexe.so": elves["glibc_interp"]}), MUSL)


def test_a_musl_wheel_is_not_a_manylinux_one(elves: dict[str, Path], tmp_path: Path) -> None:
    """The glibc platform refuses the musl wheel by its tag, and a musl library by its libc."""
    with pytest.raises(RepairError, match=r"tag is not manylinux_2_17_aarch64"):
        check_wheel(wheel_of(tmp_path / "a", {"libggml.so": elves["ggml"]}), GLIBC)
    with pytest.raises(RepairError, match=r"policy: libc\.so$"):
        check_wheel(wheel_of(tmp_path / "b", {"libggml.so": elves["ggml"]},
                             tag="py3-none-manylinux_2_17_aarch64"), GLIBC)


def test_inspect_says_musl_and_flags_a_glibc_symbol(elves: dict[str, Path], tmp_path: Path) -> None:
    from llama_wheels.release.inspection import inspect, render

    facts = inspect(wheel_of(tmp_path / "a", {"libggml.so": elves["ggml"]}))
    assert facts["libc"] == "musl" and facts["requires_glibc"] is None
    assert "requires  musl libc (musllinux: Alpine); no library needs a versioned symbol" in render(facts)
    sabotaged = render(inspect(wheel_of(tmp_path / "b", {"libglibc.so": elves["glibc"]})))
    assert "requires  musl libc (musllinux), YET a library needs GLIBC 2.17" in sabotaged

