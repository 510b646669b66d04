"""The emulated ARM test bed: cpus.toml and sysroot.toml parsing, the sysroot, and qemu-user itself.

The ``emulated`` tests build (once, cached outside the clone) and use the real sysroot; the feature test
is what keeps the data in build_config/cpus.toml honest.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llama_wheels.config.cpus import load_cpus
from llama_wheels.config.qemu_spec import load_qemu_spec
from llama_wheels.config.sysroot_spec import load_sysroot_spec
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import ConfigError, ToolchainError, UserError
from llama_wheels.emulation import qemu, sysroot
from llama_wheels.emulation.qemu import install_wheel
from tests.support.checkout import REPO, config_copy
from tests.support.wheelfactory import ELF_AARCH64, fake_wheel

EXPECTED_CPUS = ["cortex-a53", "cortex-a72", "cortex-a55", "cortex-a76", "neoverse-n1", "a64fx", "neoverse-v1",
                 "neoverse-n2", "cortex-a710", "max-nosve", "max", "max-sve256"]


def test_cpus_toml_loads_the_matrix() -> None:
    cpus = load_cpus(REPO)
    assert list(cpus) == EXPECTED_CPUS
    assert cpus["max-sve256"].qemu_cpu == "max,sve256=on"
    assert cpus["max-nosve"].qemu_cpu == "max,sve=off,sme=off"
    assert cpus["cortex-a53"].qemu_cpu == "cortex-a53"
    assert all(cpu.description for cpu in cpus.values())
    assert cpus["cortex-a53"].features.summary() == "armv8.0 baseline"
    assert cpus["a64fx"].features.summary() == "fp16+sve (SVE 512 bits)"


def test_cpus_toml_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    root = config_copy(tmp_path, "cpus.toml", ("dotprod = true", "dotprd = true"))
    with pytest.raises(
        ConfigError, match=r"cpus\.cortex-a55: unknown key 'dotprd' \(did you mean 'dotprod'\?\)"
    ):
        load_cpus(root)


def test_cpus_toml_rejects_inconsistent_sve(tmp_path: Path) -> None:
    root = config_copy(tmp_path, "cpus.toml", ("sve_bits = 512", "sve_bits = 0"))
    with pytest.raises(ConfigError, match=r"cpus\.a64fx\.sve_bits: 0 does not fit sve = true"):
        load_cpus(root)
    root = config_copy(tmp_path, "cpus.toml", ("sve_bits = 512", "sve_bits = true"))
    with pytest.raises(ConfigError, match=r"cpus\.a64fx\.sve_bits: expected the SVE vector length"):
        load_cpus(root)


def test_sysroot_toml_loads() -> None:
    spec = load_sysroot_spec(REPO)
    assert spec.python == "3.11"
    assert "python3.11-minimal" in spec.packages
    assert spec.wheels["numpy"] and spec.wheels["typing-extensions"]
    assert spec.smoke_cpu in load_cpus(REPO)
    assert spec.key == load_sysroot_spec(REPO).key


def test_sysroot_key_follows_content_not_comments(tmp_path: Path) -> None:
    key = load_sysroot_spec(REPO).key
    assert (
        load_sysroot_spec(config_copy(tmp_path, "sysroot.toml", ("# The", "# Reworded: the"))).key
        == key
    )
    changed = config_copy(tmp_path, "sysroot.toml", ('diskcache = "5.6.3"', 'diskcache = "5.6.2"'))
    assert load_sysroot_spec(changed).key != key


def test_sysroot_toml_unknown_key_and_loose_pin(tmp_path: Path) -> None:
    root = config_copy(tmp_path, "sysroot.toml", ("platform =", "platfrom ="))
    with pytest.raises(ConfigError, match=r"wheels: unknown key 'platfrom' \(did you mean 'platform'\?\)"):
        load_sysroot_spec(root)
    root = config_copy(tmp_path, "sysroot.toml", ('numpy = "2.2.6"', 'numpy = ">=2"'))
    with pytest.raises(ConfigError, match=r"wheels\.pins\.numpy: '>=2' is not an exact version"):
        load_sysroot_spec(root)


def test_qemu_toml_pins_one_deb_of_trixie() -> None:
    spec = load_qemu_spec(REPO)
    assert (spec.package, spec.arch, spec.suite, str(spec.binary)) == (
        "qemu-user", "amd64", "trixie", "usr/bin/qemu-aarch64")
    assert spec.version.startswith("1:10.0.") and len(spec.sha256) == 64
    assert spec.apt_name == f"qemu-user:amd64={spec.version}"
    assert spec.sources_line == (
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main")


@pytest.mark.parametrize(("edit", "message"), [
    (('sha256 = "ca6e', 'sha256 = "CA6E'), r"qemu\.toml: package\.sha256: 'CA6E.*' is not the \.deb's sha256"),
    (('version = "1:', 'version = ">='), r"package\.version: '>=10\.0.*' is not an exact Debian version"),
    (("binary =", "binray ="), r"package: unknown key 'binray' \(did you mean 'binary'\?\)"),
    (('keyring = "/usr', 'keyring = "usr'), r"debian\.keyring: 'usr/.*' is not an absolute path"),
])
def test_qemu_toml_refuses_a_loose_pin(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_qemu_spec(config_copy(tmp_path, "qemu.toml", edit))


def test_an_emulator_that_needs_shared_libraries_is_refused(tmp_path: Path) -> None:
    """The pinned qemu must run on this Debian 12 without its own suite's glibc: a dynamic binary (here
    the host's ls) or something that is no ELF at all is refused before it is cached."""
    spec = load_qemu_spec(REPO)
    ls = Path(shutil.which("ls") or "/bin/ls")
    with pytest.raises(UserError, match=r"qemu\.toml: usr/bin/qemu-aarch64 of qemu-user 1:10\.0\.\S+ is dynamically "
                                        r"linked \(needs .*libc\.so\.6"):
        qemu.check_static_binary(ls, "EM_X86_64", spec)
    script = tmp_path / "qemu-aarch64"
    script.write_text("#!/bin/sh\necho 'qemu-aarch64 version 10.0.13 (Debian 1:10.0.13+ds-0+deb13u1)'\n")
    with pytest.raises(UserError, match=r"is not an ELF executable for EM_X86_64"):
        qemu.check_static_binary(script, "EM_X86_64", spec)


_ELF_X86_64 = b"\x7fELF\x02\x01\x01" + b"\0" * 11 + (62).to_bytes(2, "little")


def test_install_wheel_unpacks_atomically_into_a_fresh_dir(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path, "demo_pkg-1.0-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.whl")
    dest = tmp_path / "site"
    dest.mkdir()
    (dest / "stale.py").write_text("")
    assert install_wheel(wheel, dest) == dest
    assert (dest / "demo_pkg" / "lib" / "libdemo.so").read_bytes() == ELF_AARCH64
    assert (dest / "demo_extra.py").is_file()  # .data/platlib moved to the top, as pip would
    assert not (dest / "stale.py").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize(
    ("name", "lib", "message"),
    [
        ("demo_pkg-1.0-py3-none-manylinux2014_x86_64.whl", ELF_AARCH64, "is not Linux aarch64 of one libc"),
        ("demo_pkg-1.0-py3-none-musllinux_1_2_aarch64.manylinux2014_aarch64.whl", ELF_AARCH64,
         "is not Linux aarch64 of one libc"),
        ("demo_pkg-1.0-py3-none-musllinux_1_2_aarch64.whl", _ELF_X86_64, "is not a 64-bit aarch64 ELF"),
        ("demo_pkg-1.0-py3-none-manylinux2014_aarch64.whl", _ELF_X86_64, "is not a 64-bit aarch64 ELF"),
        ("demo_pkg-1.0.tar.gz", ELF_AARCH64, "not a wheel file"),
    ],
)
def test_install_wheel_refuses_non_aarch64(tmp_path: Path, name: str, lib: bytes, message: str) -> None:
    wheel = fake_wheel(tmp_path, name, lib)
    dest = tmp_path / "site"
    with pytest.raises(UserError, match=message):
        install_wheel(wheel, dest)
    assert not dest.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_guest_env_is_built_from_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONHOME", "/nonexistent")
    env = qemu.guest_env([Path("/a"), Path("/b")], {"EXTRA": "1"})
    assert env["PYTHONPATH"] == "/a:/b"
    assert env["EXTRA"] == "1"
    assert "PYTHONHOME" not in env
    with pytest.raises(ValueError, match="pythonpath="):
        qemu.guest_env([], {"PYTHONPATH": "/x"})


def test_without_apt_the_test_bed_says_what_it_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing cached and no apt-get: neither the pinned qemu nor the sysroot can be had."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainError, match=r"^apt-get not found on PATH; the test bed is made of Debian packages"):
        sysroot.ensure_sysroot(Cache(tmp_path / "cache"))

