"""The emulated musl test bed (build_config/musl_bed.toml, emulation/musl_bed.py) and which bed runs a wheel.

In the extended tier (test_musl_wheel.py says why). The tests build the bed once (cached outside the clone:
CPython cross built with zig from Debian's sources) and run its python under qemu; the sabotage tests break a
pin or a manifest and watch the bed refuse.
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
from llama_wheels.emulation import musl_bed
from llama_wheels.emulation.qemu import Sysroot, libc_of_wheel, run_python
from tests.support.checkout import REPO, cache_root_sharing


@pytest.fixture(scope="module")
def built(cache: Cache) -> tuple[Sysroot, float]:
    started = time.monotonic()
    return musl_bed.ensure_musl_sysroot(cache), time.monotonic() - started


@pytest.fixture(scope="module")
def bed(built: tuple[Sysroot, float]) -> Sysroot:
    return built[0]


def _guest_json(bed: Sysroot, cpu: str, script: str, *args: str, pythonpath: tuple[Path, ...] = ()) -> object:
    outcome = run_python(bed, load_cpus(REPO)[cpu], ["-c", script, *args], pythonpath=list(pythonpath),
                         timeout=600)
    lines = [line for line in outcome.output.splitlines() if line.startswith("GUEST ")]
    assert outcome.returncode == 0 and lines, outcome.tail
    return json.loads(lines[-1].removeprefix("GUEST "))


def test_the_bed_is_built_once_and_records_its_inputs(built: tuple[Sysroot, float], cache: Cache) -> None:
    bed, first = built
    started = time.monotonic()
    again = musl_bed.ensure_musl_sysroot(cache)
    assert time.monotonic() - started < 3.0 and again.root == bed.root
    manifest = json.loads((bed.root / "manifest.json").read_text())
    spec = load_musl_bed_spec(REPO)
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


@pytest.mark.parametrize("cpu", ["cortex-a53", "neoverse-n1", "a64fx"])
def test_the_musl_python_runs_ctypes_zlib_numpy_pytest(bed: Sysroot, cpu: str) -> None:
    report = _guest_json(bed, cpu, _PROBE)
    spec = load_musl_bed_spec(REPO)
    assert report == {
        "version": "3.11.2", "platform": "linux-aarch64",
        "tags": ["any", "linux_aarch64", "musllinux_1_0_aarch64", "musllinux_1_1_aarch64", "musllinux_1_2_aarch64"],
        "interp": "/lib/ld-musl-aarch64.so.1", "getpid": True, "strlen": 4, "crc": 891568578, "dot": 11,
        "pytest": spec.wheels["pytest"],
    }


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
    version = load_musl_bed_spec(REPO).wheels["numpy"]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--platform", "manylinux2014_aarch64", "--python-version", "3.11", "--implementation", "cp",
                    "--dest", str(dest), f"numpy=={version}"], check=True, capture_output=True)
    [wheel] = dest.glob("*.whl")
    return wheel


def test_pip_refuses_a_manylinux_wheel_with_a_tag_mismatch(bed: Sysroot, manylinux_wheel: Path,
                                                           tmp_path: Path) -> None:
    assert libc_of_wheel(manylinux_wheel) == "glibc"
    target = tmp_path / "target"
    outcome = run_python(bed, load_cpus(REPO)["neoverse-n1"],
                         ["-m", "pip", "install", "--no-index", "--disable-pip-version-check", "--no-deps",
                          "--target", str(target), str(manylinux_wheel)], timeout=600)
    assert outcome.returncode == 1 and outcome.signal_name is None, outcome.tail
    assert f"ERROR: {manylinux_wheel.name} is not a supported wheel on this platform." in outcome.output
    assert "Traceback" not in outcome.output
    assert not target.exists() or not any(target.iterdir())


def test_a_bed_whose_manifest_does_not_match_is_not_trusted(bed: Sysroot, tmp_path: Path, cache: Cache) -> None:
    """A copy of the real bed in a fresh cache is used as it is; with its manifest's key changed it is not:
    ensure_musl_sysroot builds anew (here without network, so the build stops at its first download)."""
    fresh = Cache(cache_root_sharing(tmp_path / "cache", cache, ("tools",)))
    copy = fresh.sysroots / bed.root.name
    shutil.copytree(bed.root, copy, symlinks=True, copy_function=os.link)
    offline = ["unshare", "-n", "--"] if os.geteuid() == 0 else pytest.fail("needs root for unshare -n")
    env = {**os.environ, "LLAMA_WHEELS_CACHE": str(fresh.root), "PYTHONPATH": str(REPO / "src")}
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

