"""The emulated musl test bed (build_config/musl_bed.toml, testbed/musl_bed.py) and which bed runs a wheel.

The ``emulated`` tests build the bed once (cached outside the clone: CPython cross built with zig from Debian's
sources) and run its python under qemu; the sabotage tests break a pin or a manifest and watch the bed refuse.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llama_wheels.config.cpus import load_cpus
from llama_wheels.config.musl_bed_spec import load_musl_bed_spec
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import ConfigError, UserError
from llama_wheels.testbed import musl_bed
from llama_wheels.testbed.qemu import Sysroot, libc_of_wheel, run_python
from tests.conftest import cache_root_sharing, cli

ROOT = Path(__file__).resolve().parents[1]
DSC = "python3.11_3.11.2-6+deb12u8.dsc"


# ---- configuration and selection (no qemu) ---------------------------------------------------------------


def test_musl_bed_toml_loads() -> None:
    spec = load_musl_bed_spec(ROOT)
    assert spec.python == "3.11" and spec.zig_target == "aarch64-linux-musl"
    assert set(spec.sources) == {"python3.11", "libffi", "zlib", "sqlite3"}
    assert all(any(f.endswith(".dsc") for f in p.files) for p in spec.sources.values())
    assert spec.loader.package == "musl" and spec.loader.arch == "arm64"
    assert spec.wheel_platform == "musllinux_1_2_aarch64"
    assert set(spec.wheels) == set(spec.wheel_sha256) and {"numpy", "pytest", "gguf", "pip"} <= set(spec.wheels)
    assert spec.sources_line("deb-src").startswith("deb-src [signed-by=/usr/share/keyrings/")


def test_musl_bed_python_is_the_glibc_beds() -> None:
    from llama_wheels.config.sysroot_spec import load_sysroot_spec

    assert load_musl_bed_spec(ROOT).python == load_sysroot_spec(ROOT).python


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


# ---- the pins are checked before anything is built --------------------------------------------------------


@pytest.mark.network
def test_a_source_with_a_wrong_sha256_is_refused_before_building(config_root: Path, tmp_path: Path,
                                                                 cache: Cache) -> None:
    path = config_root / "build_config" / "musl_bed.toml"
    text = path.read_text()
    pin = "197fa19ab45f41c820f40f6d9ead671c2ea29ddc53ba9424b36f1bf58458a10e"
    assert pin in text
    path.write_text(text.replace(pin, "0" * 64))
    fresh = Cache(cache_root_sharing(tmp_path / "cache", cache, ("tools", "apt")))
    result = cli("--config", str(config_root), "--log", str(tmp_path / "log"), "bed", "musl",
                 env={**os.environ, "LLAMA_WHEELS_CACHE": str(fresh.root)}, timeout=600)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()[-1:]
    assert f'sources.python3.11.files."{DSC}": apt\'s index gives sha256 {pin}, not the pinned {"0" * 64}' in line
    assert len([x for x in result.stderr.splitlines() if "error" in x]) == 1
    assert not list(fresh.sysroots.glob("musl-*"))  # nothing built, nothing half-built
    assert not (fresh.root / "debsrc").exists() or not any((fresh.root / "debsrc").iterdir())


# ---- the bed under qemu ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(cache: Cache) -> tuple[Sysroot, float]:
    started = time.monotonic()
    return musl_bed.ensure_musl_sysroot(cache), time.monotonic() - started


@pytest.fixture(scope="module")
def bed(built: tuple[Sysroot, float]) -> Sysroot:
    return built[0]


def _guest_json(bed: Sysroot, cpu: str, script: str, *args: str, pythonpath: tuple[Path, ...] = ()) -> object:
    outcome = run_python(bed, load_cpus(ROOT)[cpu], ["-c", script, *args], pythonpath=list(pythonpath),
                         timeout=600)
    lines = [line for line in outcome.output.splitlines() if line.startswith("GUEST ")]
    assert outcome.returncode == 0 and lines, outcome.tail
    return json.loads(lines[-1].removeprefix("GUEST "))


@pytest.mark.emulated
def test_the_bed_is_built_once_and_records_its_inputs(built: tuple[Sysroot, float], cache: Cache) -> None:
    bed, first = built
    started = time.monotonic()
    again = musl_bed.ensure_musl_sysroot(cache)
    assert time.monotonic() - started < 3.0 and again.root == bed.root
    manifest = json.loads((bed.root / "manifest.json").read_text())
    spec = load_musl_bed_spec(ROOT)
    assert manifest == bed.manifest and bed.root.name == f"musl-{manifest['key']}"
    inputs = manifest["inputs"]
    assert {name: s["files"] for name, s in inputs["sources"].items()} == {
        name: dict(p.files) for name, p in spec.sources.items()}
    assert inputs["loader"]["sha256"] == spec.loader.sha256 and inputs["zig"]
    assert {w["name"]: w["sha256"] for w in manifest["wheels"]} == dict(spec.wheel_sha256)
    assert manifest["python"]["version"] == "3.11.2"
    assert {"_ctypes", "zlib", "_sqlite3", "_decimal", "_socket", "select"} <= set(manifest["modules"])
    interp = bed.root / "lib" / "ld-musl-aarch64.so.1"
    assert interp.is_symlink() and (bed.root / "lib" / "libc.musl-aarch64.so.1").resolve() == interp.resolve()
    print(f"musl bed: {musl_bed.describe(manifest)}; this session's ensure_musl_sysroot: {first:.0f} s")


_PROBE = """\
import ctypes, ctypes.util, json, sys, sysconfig, zlib, numpy, pytest
from packaging import tags
from packaging._elffile import ELFFile
libc = ctypes.CDLL(None)
print("GUEST " + json.dumps({
    "version": sys.version.split()[0], "platform": sysconfig.get_platform(),
    "tags": sorted({t.platform for t in tags.sys_tags() if t.interpreter == "cp311"}),
    "interp": ELFFile(open(sys.executable, "rb")).interpreter,
    "getpid": libc.getpid() > 0, "strlen": libc.strlen(b"musl"),
    "crc": zlib.crc32(b"abc"), "dot": int(numpy.dot([1, 2], [3, 4])), "pytest": pytest.__version__}))
"""


@pytest.mark.emulated
@pytest.mark.parametrize("cpu", ["cortex-a53", "neoverse-n1", "a64fx"])
def test_the_musl_python_runs_ctypes_zlib_numpy_pytest(bed: Sysroot, cpu: str) -> None:
    report = _guest_json(bed, cpu, _PROBE)
    spec = load_musl_bed_spec(ROOT)
    assert report == {
        "version": "3.11.2", "platform": "linux-aarch64",
        "tags": ["any", "linux_aarch64", "musllinux_1_0_aarch64", "musllinux_1_1_aarch64", "musllinux_1_2_aarch64"],
        "interp": "/lib/ld-musl-aarch64.so.1", "getpid": True, "strlen": 4, "crc": 891568578, "dot": 11,
        "pytest": spec.wheels["pytest"],
    }


@pytest.mark.emulated
def test_pip_in_the_bed_names_musllinux_tags(bed: Sysroot) -> None:
    """pip's own view (its vendored packaging; `pip debug` itself needs _ssl, which the bed does not build)."""
    script = ("import json; from pip._internal.utils.compatibility_tags import get_supported; "
              "print('GUEST ' + json.dumps(sorted({t.platform for t in get_supported()})))")
    assert _guest_json(bed, "cortex-a72", script) == [
        "any", "linux_aarch64", "musllinux_1_0_aarch64", "musllinux_1_1_aarch64", "musllinux_1_2_aarch64"]


@pytest.fixture(scope="module")
def manylinux_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """numpy's glibc (manylinux) aarch64 wheel of the version the musl bed pins."""
    dest = tmp_path_factory.mktemp("manylinux")
    version = load_musl_bed_spec(ROOT).wheels["numpy"]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--platform", "manylinux2014_aarch64", "--python-version", "3.11", "--implementation", "cp",
                    "--dest", str(dest), f"numpy=={version}"], check=True, capture_output=True)
    [wheel] = dest.glob("*.whl")
    return wheel


@pytest.mark.emulated
def test_pip_refuses_a_manylinux_wheel_with_a_tag_mismatch(bed: Sysroot, manylinux_wheel: Path,
                                                           tmp_path: Path) -> None:
    assert libc_of_wheel(manylinux_wheel) == "glibc"
    target = tmp_path / "target"
    outcome = run_python(bed, load_cpus(ROOT)["neoverse-n1"],
                         ["-m", "pip", "install", "--no-index", "--disable-pip-version-check", "--no-deps",
                          "--target", str(target), str(manylinux_wheel)], timeout=600)
    assert outcome.returncode == 1 and outcome.signal_name is None, outcome.tail
    assert f"ERROR: {manylinux_wheel.name} is not a supported wheel on this platform." in outcome.output
    assert "Traceback" not in outcome.output
    assert not target.exists() or not any(target.iterdir())


@pytest.mark.emulated
def test_a_bed_whose_manifest_does_not_match_is_not_trusted(bed: Sysroot, tmp_path: Path, cache: Cache) -> None:
    """A copy of the real bed in a fresh cache is used as it is; with its manifest's key changed it is not:
    ensure_musl_sysroot builds anew (here without network, so the build stops at its first download)."""
    fresh = Cache(cache_root_sharing(tmp_path / "cache", cache, ("tools",)))
    copy = fresh.sysroots / bed.root.name
    shutil.copytree(bed.root, copy, symlinks=True, copy_function=os.link)
    offline = ["unshare", "-n", "--"] if os.geteuid() == 0 else pytest.fail("needs root for unshare -n")
    env = {**os.environ, "LLAMA_WHEELS_CACHE": str(fresh.root), "PYTHONPATH": str(ROOT / "src")}
    command = [*offline, sys.executable, "-m", "llama_wheels", "--log", str(tmp_path / "log"), "bed", "musl"]
    trusted = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert trusted.returncode == 0 and str(copy) in trusted.stdout, trusted.stderr

    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").unlink()  # a hard link to the real bed's manifest: replace it, do not edit it
    (copy / "manifest.json").write_text(json.dumps({**manifest, "key": "0" * 16}))
    rebuilt = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rebuilt.returncode != 0, rebuilt.stderr  # the build began, and offline apt cannot get the sources
    assert "musl-bed step 1/10: sources" in rebuilt.stderr
    assert "apt-get" in rebuilt.stderr.splitlines()[-1] and str(copy) not in rebuilt.stdout
    assert json.loads((bed.root / "manifest.json").read_text())["key"] == bed.manifest["key"]


def test_guest_exec_runs_only_aarch64_programs_under_qemu(tmp_path: Path) -> None:
    """The bed's sitecustomize (guest_exec.py) rewrites exactly the exec of an aarch64 ELF."""
    from llama_wheels.testbed import guest_exec

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
