"""macOS wheels, checked statically (macos.py): tiny Mach-O files made by zig, then the real cross build.

No macOS machine is here: what dyld would do is read from the Mach-O headers (macholib). The CI workflow
builds the same target on macos-14 (with delocate) and runs the wheel test suite there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from llama_wheels.binaries.macho import macho_facts, wheel_machos
from llama_wheels.config.platforms import platform
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import RepairError
from llama_wheels.stages.macos import check_macos_wheel, describe
from llama_wheels.stages.provenance import read_provenance
from llama_wheels.stages.toolchain import zig_toolchain

from .conftest import cli, pinned

MACOS = platform("macos-arm64")
TAG = "py3-none-macosx_11_0_arm64"


def zig_dylib(out: Path, *, target: str = "aarch64-macos.11.0", links: tuple[Path, ...] = (),
              install_name: str | None = None, rpath: str | None = "@loader_path", text: str = "") -> Path:
    """A one-function dylib (returning ``text`` if given) compiled with the pinned zig (cache shared).

    ``-g0``: no debug map, whose stabs would name the object files' (build) paths, as in the real build.
    """
    src = out.with_suffix(".c")
    body = f"return {json.dumps(text)};" if text else "return \"\";"
    src.write_text(f"const char *{out.stem.replace('-', '_')}(void) {{ {body} }}\n")
    args = [sys.executable, "-m", "ziglang", "cc", "-target", target, "-g0", "-shared", "-o", str(out),
            str(src), f"-Wl,-install_name,{install_name or '@rpath/' + out.name}"]
    if rpath:
        args.append(f"-Wl,-rpath,{rpath}")
    for lib in links:
        args += [f"-L{lib.parent}", f"-l{lib.stem.removeprefix('lib')}"]
    zig_cache = str(Cache.from_env().zig)
    env = {**os.environ, "ZIG_GLOBAL_CACHE_DIR": zig_cache, "ZIG_LOCAL_CACHE_DIR": zig_cache}
    subprocess.run(args, check=True, capture_output=True, env=env, timeout=600)
    return out


def wheel_of(tmp_path: Path, files: dict[str, Path], tag: str = TAG) -> Path:
    wheel = tmp_path / f"llama_cpp_python-0.0.1-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, path in files.items():
            archive.write(path, name)
        archive.writestr("llama_cpp_python-0.0.1.dist-info/WHEEL", "Wheel-Version: 1.0\n")
    return wheel


@pytest.fixture
def libs(tmp_path: Path) -> dict[str, Path]:
    ggml = zig_dylib(tmp_path / "libggml.dylib")
    llama = zig_dylib(tmp_path / "libllama.dylib", links=(ggml,))
    return {"llama_cpp/lib/libllama.dylib": llama, "llama_cpp/lib/libggml.dylib": ggml}


def test_bundled_libraries_via_rpath_pass(tmp_path: Path, libs: dict[str, Path]) -> None:
    facts = {f.path: f for f in check_macos_wheel(wheel_of(tmp_path, libs), MACOS)}
    llama = facts["llama_cpp/lib/libllama.dylib"]
    assert llama.archs == ("ARM64",) and llama.minos == ("11.0",)
    assert "@rpath/libggml.dylib" in llama.dylibs and llama.rpaths == ("@loader_path",)
    assert all(d.startswith(("@rpath/", "/usr/lib/")) for d in llama.dylibs)


def test_a_bundled_library_missing_from_the_wheel(tmp_path: Path, libs: dict[str, Path]) -> None:
    del libs["llama_cpp/lib/libggml.dylib"]
    with pytest.raises(RepairError, match=r"loads @rpath/libggml\.dylib, which is neither a system library"):
        check_macos_wheel(wheel_of(tmp_path, libs), MACOS)


def test_a_library_from_homebrew(tmp_path: Path) -> None:
    omp = zig_dylib(tmp_path / "libomp.dylib", install_name="/opt/homebrew/lib/libomp.dylib")
    llama = zig_dylib(tmp_path / "libllama.dylib", links=(omp,))
    with pytest.raises(RepairError, match=r"loads /opt/homebrew/lib/libomp\.dylib"):
        check_macos_wheel(wheel_of(tmp_path, {"llama_cpp/lib/libllama.dylib": llama}), MACOS)


def test_a_build_machine_rpath(tmp_path: Path) -> None:
    lib = zig_dylib(tmp_path / "libllama.dylib", rpath="/Users/runner/work/build")
    with pytest.raises(RepairError, match="LC_RPATH /Users/runner/work/build"):
        check_macos_wheel(wheel_of(tmp_path, {"llama_cpp/lib/libllama.dylib": lib}), MACOS)


def test_minos_above_the_deployment_target(tmp_path: Path) -> None:
    lib = zig_dylib(tmp_path / "libllama.dylib", target="aarch64-macos.13.0")
    with pytest.raises(RepairError, match=r"needs macOS 13.0, but the wheel tag promises 11.0"):
        check_macos_wheel(wheel_of(tmp_path, {"llama_cpp/lib/libllama.dylib": lib}), MACOS)


def test_an_x86_64_library(tmp_path: Path) -> None:
    lib = zig_dylib(tmp_path / "libllama.dylib", target="x86_64-macos.11.0")
    with pytest.raises(RepairError, match="is x86_64, not arm64 only"):
        check_macos_wheel(wheel_of(tmp_path, {"llama_cpp/lib/libllama.dylib": lib}), MACOS)


def test_the_wheel_tag(tmp_path: Path, libs: dict[str, Path]) -> None:
    with pytest.raises(RepairError, match="tag is not macosx_11_0_arm64"):
        check_macos_wheel(wheel_of(tmp_path, libs, tag="py3-none-macosx_14_0_arm64"), MACOS)


def test_an_absolute_install_name(tmp_path: Path) -> None:
    """What a cross build without rpath support produced: LC_ID_DYLIB = the path it was linked at."""
    lib = zig_dylib(tmp_path / "libllama.dylib", install_name="/root/build/bin/libllama.dylib")
    with pytest.raises(RepairError, match=r"install name \(LC_ID_DYLIB\) /root/build/bin/libllama\.dylib, "
                                          r"not @rpath/libllama\.dylib"):
        check_macos_wheel(wheel_of(tmp_path, {"llama_cpp/lib/libllama.dylib": lib}), MACOS)


def test_an_rpath_reference_without_lc_rpath(tmp_path: Path) -> None:
    ggml = zig_dylib(tmp_path / "libggml.dylib")
    llama = zig_dylib(tmp_path / "libllama.dylib", links=(ggml,), rpath=None)
    files = {"llama_cpp/lib/libllama.dylib": llama, "llama_cpp/lib/libggml.dylib": ggml}
    with pytest.raises(RepairError, match=r"libllama\.dylib loads @rpath/libggml\.dylib but has no LC_RPATH"):
        check_macos_wheel(wheel_of(tmp_path, files), MACOS)


def test_a_build_path_inside_a_library(tmp_path: Path, libs: dict[str, Path]) -> None:
    """E.g. a __FILE__ that no -ffile-prefix-map rewrote."""
    libs["llama_cpp/lib/libggml.dylib"] = zig_dylib(tmp_path / "libggml.dylib",
                                                    text="/Users/runner/work/llama/ggml.c")
    with pytest.raises(RepairError, match=r"libggml\.dylib names a build-machine path: "
                                          r"/Users/runner/work/llama/ggml\.c$"):
        check_macos_wheel(wheel_of(tmp_path, libs), MACOS)


def test_the_libraries_llama_cpp_opens_by_path(tmp_path: Path, libs: dict[str, Path]) -> None:
    del libs["llama_cpp/lib/libllama.dylib"]
    with pytest.raises(RepairError, match=r"ctypes loader opens llama_cpp/lib/libllama\.dylib, which the "
                                          "wheel does not hold"):
        check_macos_wheel(wheel_of(tmp_path, libs), MACOS)


def test_the_zig_toolchain_gives_cmake_darwin_rpath_support(tmp_path: Path) -> None:
    """CMake names Darwin libraries @rpath/... only when sw_vers answers; the toolchain file sees to it.

    Two libraries as llama-cpp-python's CMakeLists sets them up (INSTALL_RPATH @loader_path, linked with
    it), configured and linked with the zig toolchain of the macos-arm64 target on this Linux machine.
    """
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.c").write_text("int a(void) { return 1; }\n")
    (src / "b.c").write_text("int a(void);\nint b(void) { return a(); }\n")
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.21)\nproject(probe C)\n"
        "add_library(a SHARED a.c)\nadd_library(b SHARED b.c)\ntarget_link_libraries(b PRIVATE a)\n"
        # a MODULE, as ggml's GGML_BACKEND_DL backends: CMake links it with -bundle (zigcc: a dylib)
        "add_library(m MODULE b.c)\ntarget_link_libraries(m PRIVATE a)\n"
        "set_target_properties(a b m PROPERTIES INSTALL_RPATH @loader_path BUILD_WITH_INSTALL_RPATH TRUE)\n")
    cache = Cache.from_env()
    toolchain = zig_toolchain(MACOS, cache)
    bin_dir = Path(sys.executable).parent
    build = tmp_path / "build"
    env = {**os.environ, **toolchain.env}
    configure = ["-S", str(src), "-B", str(build), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={bin_dir / 'ninja'}",
                 f"-DCMAKE_TOOLCHAIN_FILE={toolchain.toolchain_file}"]
    for args in (configure, ["--build", str(build)]):
        result = subprocess.run([str(bin_dir / "cmake"), *args], capture_output=True, text=True, env=env,
                                timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    a, b = (macho_facts(name, build / name) for name in ("liba.dylib", "libb.dylib"))
    assert (a.install_name, a.rpaths) == ("@rpath/liba.dylib", ("@loader_path",))
    assert (b.install_name, b.rpaths) == ("@rpath/libb.dylib", ("@loader_path",))
    assert "@rpath/liba.dylib" in b.dylibs
    m = macho_facts("libm.so", build / "libm.so")
    assert (m.filetype, m.install_name, m.rpaths) == ("dylib", "@rpath/libm.so", ("@loader_path",))
    assert "@rpath/liba.dylib" in m.dylibs


@pytest.mark.build
def test_macos_cpu_wheel_cross_built_with_zig(tmp_path: Path) -> None:
    """The macos-arm64 target, cross built here as plan() says; the checks CI makes after delocate.

    As macOS would load it: every dylib named @rpath/<name>, found through LC_RPATH @loader_path, the
    libraries llama_cpp opens by path present; provenance recorded like a Linux wheel's.
    """
    dist = tmp_path / "dist"
    log = tmp_path / "build.log"
    result = cli("--log", str(log), "build", "macos-arm64", "--no-verify", "--dist", str(dist))
    assert result.returncode == 0, f"build failed (log {tmp_path / 'build.log'}):\n{result.stderr[-3000:]}"
    [wheel] = dist.glob("*.whl")
    assert wheel.name == f"llama_cpp_python-{pinned().version}-{TAG}.whl"
    libraries = check_macos_wheel(wheel, MACOS)
    print(describe(libraries))  # the otool -l view, in the test log
    names = {Path(lib.path).name for lib in libraries}
    # Runtime dispatch: one CPU library per Apple variant, named as ggml's loader looks for them (.so)
    variants = {"libggml-cpu-apple_m1.so", "libggml-cpu-apple_m2_m3.so", "libggml-cpu-apple_m4.so"}
    assert {"libllama.dylib", "libggml.dylib", "libggml-base.dylib"} | variants <= names
    assert "libggml-cpu.dylib" not in names
    assert "libggml-metal.dylib" not in names  # patch 0004: -DGGML_METAL=OFF is honoured
    for lib in libraries:
        assert lib.filetype == "dylib" and lib.install_name == f"@rpath/{Path(lib.path).name}", lib
        assert lib.rpaths == ("@loader_path",), lib
        assert all(d.startswith(("@rpath/", "/usr/lib/")) for d in lib.dylibs), lib
    loaded = {d for lib in libraries for d in lib.dylibs}
    assert not [d for d in loaded if "Metal" in d or "Foundation" in d or "Accelerate" in d], loaded
    assert {m for m in wheel_machos(wheel) for m in m.minos} == {"11.0"}
    record = read_provenance(wheel)
    assert record is not None and record["target"]["name"] == "macos-arm64"
    assert record["target"]["index"] == "cpu"
    # What the wheel suite on a Mac judges by: every variant the wheel ships, with the features ggml scores
    assert record["target"]["cpu_variants"] == {"apple_m1": ["dotprod"], "apple_m2_m3": ["dotprod", "i8mm"],
                                                "apple_m4": ["dotprod", "i8mm", "sme"]}
    inspected = cli("inspect", str(wheel), timeout=300)
    assert inspected.returncode == 0, inspected.stderr
    assert "requires  macOS >= 11.0" in inspected.stdout
    assert "target     macos-arm64 (macos-arm64, index cpu)" in inspected.stdout
