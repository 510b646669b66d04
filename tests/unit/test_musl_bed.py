"""The emulated musl test bed (build_config/musl_bed.toml, emulation/musl_bed.py) and which bed runs a wheel.

The ``emulated`` tests build the bed once (cached outside the clone: CPython cross built with zig from Debian's
sources) and run its python under qemu; the sabotage tests break a pin or a manifest and watch the bed refuse.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_wheels.config.musl_bed_spec import load_musl_bed_spec
from llama_wheels.core.errors import ConfigError, UserError
from llama_wheels.emulation import musl_bed
from llama_wheels.emulation.qemu import libc_of_wheel
from tests.support.checkout import REPO


def test_musl_bed_toml_loads() -> None:
    spec = load_musl_bed_spec(REPO)
    assert spec.python == "3.11" and spec.zig_target == "aarch64-linux-musl"
    assert set(spec.sources) == {"python3.11", "libffi", "zlib", "sqlite3"}
    assert all(any(f.endswith(".dsc") for f in p.files) for p in spec.sources.values())
    assert spec.loader.package == "musl" and spec.loader.arch == "arm64"
    assert spec.wheel_platform == "musllinux_1_2_aarch64"
    assert set(spec.wheels) == set(spec.wheel_sha256) and {"numpy", "pytest", "gguf", "pip"} <= set(spec.wheels)
    assert spec.sources_line("deb-src").startswith("deb-src [signed-by=/usr/share/keyrings/")


def test_musl_bed_python_is_the_glibc_beds() -> None:
    from llama_wheels.config.sysroot_spec import load_sysroot_spec

    assert load_musl_bed_spec(REPO).python == load_sysroot_spec(REPO).python


@pytest.mark.parametrize(("edit", "message"), [
    (('= "2411c74bda5bbcfcddaf', '= "2411C74bda5bbcfcddaf'),
     r"sources\.python3\.11\.files\.python3\.11_3\.11\.2\.orig"),
    (("ac_cv_file__dev_ptc", "dev_ptc"), r"cpython\.cache\.dev_ptc: not an autoconf cache answer"),
    (('pip = "26.3"\n\n', ""), r"wheels: pins and sha256 must name the same projects; differ in pip"),
    (("0001-setup-py", "0009-setup-py"), r"patches/musl-bed/0009-setup-py.* does not exist"),
])
def test_musl_bed_toml_refuses_bad_entries(config_root: Path, edit: tuple[str, str], message: str) -> None:
    path = config_root / "build_config" / "musl_bed.toml"
    text = path.read_text()
    assert edit[0] in text, edit
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError, match=message):
        load_musl_bed_spec(config_root)


def test_the_bed_key_follows_every_input(config_root: Path) -> None:
    spec = load_musl_bed_spec(config_root)
    key = musl_bed.bed_key(spec, "0.17.1", config_root)
    assert musl_bed.bed_key(spec, "0.17.2", config_root) != key  # another zig
    patch = config_root / "patches" / "musl-bed" / spec.patches[0]
    patch.write_text(patch.read_text() + "\n")
    assert musl_bed.bed_key(spec, "0.17.1", config_root) != key  # another patch
    path = config_root / "build_config" / "musl_bed.toml"
    path.write_text(path.read_text().replace('opt = "-DNDEBUG -fwrapv -O2 -Wall"', 'opt = "-DNDEBUG -O1"'))
    assert load_musl_bed_spec(config_root).canonical != spec.canonical  # other configure input


@pytest.mark.parametrize(("name", "libc"), [
    ("llama_cpp_python-0.3.36-py3-none-manylinux2014_aarch64.manylinux_2_17_aarch64.whl", "glibc"),
    ("demo-1.0-py3-none-linux_aarch64.whl", "glibc"),
    ("llama_cpp_python-0.3.36-py3-none-musllinux_1_2_aarch64.whl", "musl"),
    ("numpy-2.2.6-cp311-cp311-musllinux_1_1_aarch64.musllinux_1_2_aarch64.whl", "musl"),
])
def test_the_wheel_tag_picks_the_bed(name: str, libc: str) -> None:
    assert libc_of_wheel(Path(name)) == libc


@pytest.mark.parametrize("name", [
    "demo-1.0-py3-none-musllinux_1_2_aarch64.manylinux_2_17_aarch64.whl",  # which libc?
    "demo-1.0-py3-none-musllinux_1_2_x86_64.whl",
    "demo-1.0-py3-none-macosx_11_0_arm64.whl",
    "demo-1.0.tar.gz",
])
def test_a_wheel_of_no_bed_is_refused(name: str) -> None:
    with pytest.raises(UserError):
        libc_of_wheel(Path(name))


def test_guest_exec_runs_only_aarch64_programs_under_qemu(tmp_path: Path) -> None:
    """The bed's sitecustomize (guest_exec.py) rewrites exactly the exec of an aarch64 ELF."""
    from llama_wheels.standalone import guest_exec

    root = tmp_path / "bed"
    (root / "lib").mkdir(parents=True)
    elf = bytearray(64)
    elf[:5], elf[18:20] = b"\x7fELF\x02", (183).to_bytes(2, "little")
    (root / "lib" / "ld.so").write_bytes(bytes(elf))
    host_program = tmp_path / "tool.sh"
    host_program.write_text("#!/bin/sh\n")
    calls: list[tuple[object, ...]] = []

    def record(*args: object) -> int:
        calls.append(args)
        return 7

    wrapped = guest_exec._wrap(record, "/q/qemu-aarch64", "cortex-a53", str(root))
    # In the guest, qemu -L shows the bed's lib/ld.so at /lib/ld.so; here the test opens the bed's path.
    assert wrapped(["ld"], (str(root / "lib" / "ld.so").encode(),), "rest") == 7
    assert calls[-1] == ([b"/q/qemu-aarch64", b"-cpu", b"cortex-a53", b"-L", str(root).encode(), b"-0", b"ld",
                          str(root / "lib" / "ld.so").encode()],
                         (b"/q/qemu-aarch64",), "rest")
    assert wrapped(["tool"], (b"/nonexistent/tool", str(host_program).encode()), "rest") == 7
    assert calls[-1] == (["tool"], (b"/nonexistent/tool", str(host_program).encode()), "rest")

