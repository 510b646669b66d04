"""The emulated ARM test bed: cpus.toml and sysroot.toml parsing, the sysroot, and qemu-user itself.

The ``emulated`` tests build (once, cached outside the clone) and use the real sysroot; the feature test
is what keeps the data in build_config/cpus.toml honest.
"""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from llama_wheels.config.cpus import Cpu, load_cpus
from llama_wheels.config.qemu_spec import load_qemu_spec
from llama_wheels.config.sysroot_spec import load_sysroot_spec
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import ChecksumError, ConfigError, ToolchainError, UserError
from llama_wheels.testbed import qemu, sysroot
from llama_wheels.testbed.matrix import check_cpus
from llama_wheels.testbed.qemu import install_wheel, run_python

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_CPUS = ["cortex-a53", "cortex-a72", "cortex-a55", "cortex-a76", "neoverse-n1", "a64fx", "neoverse-v1",
                 "neoverse-n2", "cortex-a710", "max-nosve", "max", "max-sve256"]

# Runs raw A64 machine code given in hex (little-endian words, ending in RET) and prints what it returns.
RUN_CODE = """\
import ctypes, mmap, sys
buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
buf.write(bytes.fromhex(sys.argv[1]))
print("RESULT", ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))())
"""
RET = "c0035fd6"
RDVL_X0_1 = "2050bf04" + RET  # SVE: x0 = vector length in bytes
SDOT = "2094824e" + RET  # dotprod: sdot v0.4s, v1.16b, v2.16b


def _config_copy(tmp_path: Path, name: str, edit: tuple[str, str] | None = None) -> Path:
    """A project root in tmp_path holding build_config/NAME, optionally with one text replacement."""
    text = (ROOT / "build_config" / name).read_text()
    if edit is not None:
        assert edit[0] in text, edit
        text = text.replace(edit[0], edit[1], 1)
    (tmp_path / "build_config").mkdir(exist_ok=True)
    (tmp_path / "build_config" / name).write_text(text)
    return tmp_path


def _cpu(name: str) -> Cpu:
    return load_cpus(ROOT)[name]


# ---- configuration (no qemu) ---------------------------------------------------------------------------


def test_cpus_toml_loads_the_matrix() -> None:
    cpus = load_cpus(ROOT)
    assert list(cpus) == EXPECTED_CPUS
    assert cpus["max-sve256"].qemu_cpu == "max,sve256=on"
    assert cpus["max-nosve"].qemu_cpu == "max,sve=off,sme=off"
    assert cpus["cortex-a53"].qemu_cpu == "cortex-a53"
    assert all(cpu.description for cpu in cpus.values())
    assert cpus["cortex-a53"].features.summary() == "armv8.0 baseline"
    assert cpus["a64fx"].features.summary() == "fp16+sve (SVE 512 bits)"


def test_cpus_toml_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    root = _config_copy(tmp_path, "cpus.toml", ("dotprod = true", "dotprd = true"))
    with pytest.raises(
        ConfigError, match=r"cpus\.cortex-a55: unknown key 'dotprd' \(did you mean 'dotprod'\?\)"
    ):
        load_cpus(root)


def test_cpus_toml_rejects_inconsistent_sve(tmp_path: Path) -> None:
    root = _config_copy(tmp_path, "cpus.toml", ("sve_bits = 512", "sve_bits = 0"))
    with pytest.raises(ConfigError, match=r"cpus\.a64fx\.sve_bits: 0 does not fit sve = true"):
        load_cpus(root)
    root = _config_copy(tmp_path, "cpus.toml", ("sve_bits = 512", "sve_bits = true"))
    with pytest.raises(ConfigError, match=r"cpus\.a64fx\.sve_bits: expected the SVE vector length"):
        load_cpus(root)


def test_sysroot_toml_loads() -> None:
    spec = load_sysroot_spec(ROOT)
    assert spec.python == "3.11"
    assert "python3.11-minimal" in spec.packages
    assert spec.wheels["numpy"] and spec.wheels["typing-extensions"]
    assert spec.smoke_cpu in load_cpus(ROOT)
    assert spec.key == load_sysroot_spec(ROOT).key


def test_sysroot_key_follows_content_not_comments(tmp_path: Path) -> None:
    key = load_sysroot_spec(ROOT).key
    assert (
        load_sysroot_spec(_config_copy(tmp_path, "sysroot.toml", ("# The", "# Reworded: the"))).key
        == key
    )
    changed = _config_copy(tmp_path, "sysroot.toml", ('diskcache = "5.6.3"', 'diskcache = "5.6.2"'))
    assert load_sysroot_spec(changed).key != key


def test_sysroot_toml_unknown_key_and_loose_pin(tmp_path: Path) -> None:
    root = _config_copy(tmp_path, "sysroot.toml", ("platform =", "platfrom ="))
    with pytest.raises(ConfigError, match=r"wheels: unknown key 'platfrom' \(did you mean 'platform'\?\)"):
        load_sysroot_spec(root)
    root = _config_copy(tmp_path, "sysroot.toml", ('numpy = "2.2.6"', 'numpy = ">=2"'))
    with pytest.raises(ConfigError, match=r"wheels\.pins\.numpy: '>=2' is not an exact version"):
        load_sysroot_spec(root)


def test_qemu_toml_pins_one_deb_of_trixie() -> None:
    spec = load_qemu_spec(ROOT)
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
        load_qemu_spec(_config_copy(tmp_path, "qemu.toml", edit))


def test_an_emulator_that_needs_shared_libraries_is_refused(tmp_path: Path) -> None:
    """The pinned qemu must run on this Debian 12 without its own suite's glibc: a dynamic binary (here
    the host's ls) or something that is no ELF at all is refused before it is cached."""
    spec = load_qemu_spec(ROOT)
    ls = Path(shutil.which("ls") or "/bin/ls")
    with pytest.raises(UserError, match=r"qemu\.toml: usr/bin/qemu-aarch64 of qemu-user 1:10\.0\.\S+ is dynamically "
                                        r"linked \(needs .*libc\.so\.6"):
        qemu.check_static_binary(ls, "EM_X86_64", spec)
    script = tmp_path / "qemu-aarch64"
    script.write_text("#!/bin/sh\necho 'qemu-aarch64 version 10.0.13 (Debian 1:10.0.13+ds-0+deb13u1)'\n")
    with pytest.raises(UserError, match=r"is not an ELF executable for EM_X86_64"):
        qemu.check_static_binary(script, "EM_X86_64", spec)


# ---- the pinned qemu (network: Debian's trixie suite) ---------------------------------------------------


@pytest.mark.network
def test_the_pinned_qemu_is_fetched_once_and_is_static_10_0(cache: Cache) -> None:
    spec = load_qemu_spec(ROOT)
    binary = qemu.ensure_qemu(cache)
    assert binary.parent == cache.root / "tools" / f"qemu-user-{spec.sha256[:16]}"
    record = json.loads((binary.parent / "deb.json").read_text())
    assert (record["version"], record["sha256"], record["arch"]) == (spec.version, spec.sha256, "amd64")
    qemu.check_static_binary(binary, "EM_X86_64", spec)  # what it was let in by, still true
    started = time.monotonic()
    assert qemu.ensure_qemu(cache) == binary
    assert time.monotonic() - started < 1.0  # a cache hit: no apt, no network
    older = replace(spec, version="1:10.0.12+ds-0+deb13u1")
    with pytest.raises(UserError, match=r"does not run here or is another version: qemu-aarch64 version 10\.0\.13"):
        qemu.check_static_binary(binary, "EM_X86_64", older)


@pytest.mark.network
def test_a_wrong_sha256_pin_is_refused_and_nothing_is_cached(tmp_path: Path) -> None:
    """Sabotage: a copied qemu.toml with another sha256. apt's index contradicts the pin, so nothing is
    downloaded, unpacked or cached; the error is one line naming the file, both hashes and the fix."""
    real = load_qemu_spec(ROOT).sha256
    spec = load_qemu_spec(_config_copy(tmp_path, "qemu.toml", (real, "0" * 64)))
    fresh = Cache(tmp_path / "cache")
    with pytest.raises(ChecksumError) as refused:
        qemu.ensure_qemu(fresh, spec)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{spec.source}: [package]: apt's index gives qemu-user_1%3a10.0.")
    assert f"sha256 {real}, not the pinned {'0' * 64}" in message
    assert "see the header of qemu.toml" in message
    left = sorted(p.name for p in (fresh.root / "tools").iterdir())
    assert left == [f".qemu-user-{'0' * 16}.lock"], left  # no binary, no scratch dir
    assert not list(fresh.root.rglob("*.deb"))


@pytest.mark.network
def test_a_version_trixie_no_longer_has_is_refused_naming_the_pin(tmp_path: Path) -> None:
    """What happens after a trixie point release replaces the pinned version: one line, nothing cached."""
    spec = load_qemu_spec(_config_copy(tmp_path, "qemu.toml", ('version = "1:10.0.', 'version = "1:9.9.')))
    fresh = Cache(tmp_path / "cache")
    with pytest.raises(ConfigError, match=r"qemu\.toml: \[package\]: apt-get cannot download them: E: Version "
                                          r"'1:9\.9\.\S+' for 'qemu-user' was not found; to move the pin, see the "
                                          r"header of qemu\.toml$"):
        qemu.ensure_qemu(fresh, spec)
    assert not [p for p in (fresh.root / "tools").iterdir() if not p.name.endswith(".lock")]


# ---- install_wheel (no qemu) ---------------------------------------------------------------------------

_ELF_AARCH64 = b"\x7fELF\x02\x01\x01" + b"\0" * 11 + (183).to_bytes(2, "little")
_ELF_X86_64 = b"\x7fELF\x02\x01\x01" + b"\0" * 11 + (62).to_bytes(2, "little")


def _fake_wheel(where: Path, name: str, lib: bytes = _ELF_AARCH64) -> Path:
    wheel = where / name
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo_pkg/__init__.py", "import pathlib\nANSWER = 42\n")
        zf.writestr("demo_pkg/lib/libdemo.so", lib)
        zf.writestr("demo_pkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: false\n")
        zf.writestr("demo_pkg-1.0.data/platlib/demo_extra.py", "EXTRA = 1\n")
    return wheel


def test_install_wheel_unpacks_atomically_into_a_fresh_dir(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path, "demo_pkg-1.0-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.whl")
    dest = tmp_path / "site"
    dest.mkdir()
    (dest / "stale.py").write_text("")
    assert install_wheel(wheel, dest) == dest
    assert (dest / "demo_pkg" / "lib" / "libdemo.so").read_bytes() == _ELF_AARCH64
    assert (dest / "demo_extra.py").is_file()  # .data/platlib moved to the top, as pip would
    assert not (dest / "stale.py").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize(
    ("name", "lib", "message"),
    [
        ("demo_pkg-1.0-py3-none-manylinux2014_x86_64.whl", _ELF_AARCH64, "is not Linux aarch64 of one libc"),
        ("demo_pkg-1.0-py3-none-musllinux_1_2_aarch64.manylinux2014_aarch64.whl", _ELF_AARCH64,
         "is not Linux aarch64 of one libc"),
        ("demo_pkg-1.0-py3-none-musllinux_1_2_aarch64.whl", _ELF_X86_64, "is not a 64-bit aarch64 ELF"),
        ("demo_pkg-1.0-py3-none-manylinux2014_aarch64.whl", _ELF_X86_64, "is not a 64-bit aarch64 ELF"),
        ("demo_pkg-1.0.tar.gz", _ELF_AARCH64, "not a wheel file"),
    ],
)
def test_install_wheel_refuses_non_aarch64(tmp_path: Path, name: str, lib: bytes, message: str) -> None:
    wheel = _fake_wheel(tmp_path, name, lib)
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


# ---- under qemu ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(cache: Cache) -> tuple[sysroot.Sysroot, float]:
    started = time.monotonic()
    return sysroot.ensure_sysroot(cache), time.monotonic() - started


@pytest.fixture(scope="module")
def root(built: tuple[sysroot.Sysroot, float]) -> sysroot.Sysroot:
    return built[0]


@pytest.mark.emulated
def test_sysroot_is_built_once_and_recorded(built: tuple[sysroot.Sysroot, float], cache: Cache) -> None:
    root, _first = built
    started = time.monotonic()
    again = sysroot.ensure_sysroot(cache)
    assert time.monotonic() - started < 2.0
    assert again.root == root.root
    assert root.python.is_file() and root.site.is_dir()
    manifest = json.loads((root.root / "manifest.json").read_text())
    assert manifest == root.manifest and manifest["key"] == root.key
    spec = load_sysroot_spec(ROOT)
    assert {d["package"] for d in manifest["debian"]} == {p.removesuffix(":all") for p in spec.packages}
    assert {w["name"]: w["version"] for w in manifest["wheels"]} == dict(spec.wheels)
    assert all(len(entry["sha256"]) == 64 for entry in manifest["debian"] + manifest["wheels"])
    assert manifest["python"]["version"].startswith("3.11.")


@pytest.mark.emulated
def test_guest_python_runs_the_test_stack_on_cortex_a53(
    root: sysroot.Sysroot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Host settings that would break or pollute the guest interpreter must not reach it.
    monkeypatch.setenv("PYTHONHOME", "/nonexistent")
    monkeypatch.setenv("PYTHONSTARTUP", "/nonexistent/startup.py")
    script = (
        "import json, os, platform, sys, numpy, gguf, pytest, jinja2, yaml, diskcache;"
        "print('GUEST', json.dumps({'machine': platform.machine(), 'numpy': numpy.__version__,"
        " 'dot': int(numpy.dot([1, 2], [3, 4])), 'leaked': sorted(k for k in os.environ if k in"
        " ('PYTHONHOME', 'PYTHONSTARTUP')), 'prefix': sys.prefix}))"
    )
    outcome = run_python(root, _cpu("cortex-a53"), ["-c", script], timeout=120)
    assert outcome.returncode == 0, outcome.tail
    report = json.loads(
        next(line for line in outcome.tail if line.startswith("GUEST ")).removeprefix("GUEST ")
    )
    assert report == {
        "machine": "aarch64",
        "numpy": load_sysroot_spec(ROOT).wheels["numpy"],
        "dot": 11,
        "leaked": [],
        "prefix": str(root.root / "usr"),
    }

    # pytest itself runs in the guest, against a wheel installed with install_wheel.
    site = install_wheel(_fake_wheel(tmp_path, "demo_pkg-1.0-py3-none-linux_aarch64.whl"), tmp_path / "demo")
    tests = tmp_path / "guest_tests"
    tests.mkdir()
    (tests / "test_guest.py").write_text(
        "import platform, demo_pkg\n\ndef test_guest():\n"
        "    assert platform.machine() == 'aarch64' and demo_pkg.ANSWER == 42\n"
    )
    outcome = run_python(
        root,
        _cpu("cortex-a53"),
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
        pythonpath=[site],
        cwd=tmp_path,
        timeout=300,
    )
    assert outcome.returncode == 0, outcome.tail
    assert any("1 passed" in line for line in outcome.tail), outcome.tail


@pytest.mark.emulated
def test_cpus_toml_features_are_what_qemu_reports(root: sysroot.Sysroot) -> None:
    """What every matrix run checks first (matrix.check_cpus), and that it refuses stale CPU data."""
    cpus = list(load_cpus(ROOT).values())
    check_cpus(root, cpus)
    n1 = next(c for c in cpus if c.name == "neoverse-n1")
    stale = replace(n1, features=replace(n1.features, i8mm=True))  # as if measured with another qemu
    with pytest.raises(UserError, match=r"cpus.toml does not match .*neoverse-n1: cpus.toml says dotprod\+fp16\+i8mm"):
        check_cpus(root, [cpus[0], stale])


@pytest.mark.emulated
def test_sigill_is_reported_as_such(root: sysroot.Sysroot, tmp_path: Path) -> None:
    outcome = run_python(
        root,
        _cpu("cortex-a53"),
        ["-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"],
        cwd=tmp_path,
    )
    assert (outcome.returncode, outcome.signal_name) == (-4, "SIGILL")
    assert list(tmp_path.iterdir()) == []  # no qemu core dump left behind


@pytest.mark.emulated
@pytest.mark.parametrize(
    ("cpu", "code", "result"),
    [
        pytest.param("cortex-a53", RDVL_X0_1, "SIGILL", id="cortex-a53-sve"),  # no SVE
        pytest.param("a64fx", RDVL_X0_1, "64", id="a64fx-sve"),  # 512-bit vectors = 64 bytes
        pytest.param("max-sve256", RDVL_X0_1, "32", id="max-sve256-sve"),
        pytest.param("neoverse-v1", RDVL_X0_1, "32", id="neoverse-v1-sve"),  # Graviton3: 256 bits
        pytest.param("neoverse-n2", RDVL_X0_1, "16", id="neoverse-n2-sve"),  # 128 bits
        pytest.param("max-nosve", RDVL_X0_1, "SIGILL", id="max-nosve-sve"),  # max, but SVE really off
        pytest.param("cortex-a72", SDOT, "SIGILL", id="cortex-a72-dotprod"),  # armv8.0: no dotprod
        pytest.param("a64fx", SDOT, "SIGILL", id="a64fx-dotprod"),  # SVE, yet no dotprod
        pytest.param("neoverse-n1", SDOT, "0", id="neoverse-n1-dotprod"),
    ],
)
def test_qemu_enforces_the_isa(
    root: sysroot.Sysroot, tmp_path: Path, cpu: str, code: str, result: str
) -> None:
    """A real instruction the CPU lacks dies of SIGILL: what proving a wheel's ISA dispatch relies on."""
    outcome = run_python(root, _cpu(cpu), ["-c", RUN_CODE, code], cwd=tmp_path, timeout=120)
    if result == "SIGILL":
        assert outcome.signal_name == "SIGILL", outcome.tail
    else:
        assert outcome.returncode == 0, outcome.tail
        assert f"RESULT {result}" in outcome.tail


def test_without_apt_the_test_bed_says_what_it_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing cached and no apt-get: neither the pinned qemu nor the sysroot can be had."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainError, match=r"^apt-get not found on PATH; the test bed is made of Debian packages"):
        sysroot.ensure_sysroot(Cache(tmp_path / "cache"))
