"""The emulated ARM test bed: cpus.toml and sysroot.toml parsing, the sysroot, and qemu-user itself.

The ``emulated`` tests build (once, cached outside the clone) and use the real sysroot; the feature test
is what keeps the data in build_config/cpus.toml honest.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from llama_wheels.config.cpus import Cpu, load_cpus
from llama_wheels.config.mca_spec import load_mca_spec, own_classes
from llama_wheels.config.sysroot_spec import load_sysroot_spec
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import UserError
from llama_wheels.emulation import sysroot
from llama_wheels.emulation.qemu import install_wheel, run_python
from llama_wheels.judges.matrix import check_cpus
from tests.support.checkout import REPO
from tests.support.wheelfactory import fake_wheel

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


def _cpu(name: str) -> Cpu:
    return load_cpus(REPO)[name]


@pytest.fixture(scope="module")
def built(cache: Cache) -> tuple[sysroot.Sysroot, float]:
    started = time.monotonic()
    return sysroot.ensure_sysroot(cache), time.monotonic() - started


@pytest.fixture(scope="module")
def root(built: tuple[sysroot.Sysroot, float]) -> sysroot.Sysroot:
    return built[0]


def test_sysroot_is_built_once_and_recorded(built: tuple[sysroot.Sysroot, float], cache: Cache) -> None:
    root, _first = built
    started = time.monotonic()
    again = sysroot.ensure_sysroot(cache)
    assert time.monotonic() - started < 2.0
    assert again.root == root.root
    assert root.python.is_file() and root.site.is_dir()
    manifest = json.loads((root.root / "manifest.json").read_text())
    assert manifest == root.manifest and manifest["key"] == root.key
    spec = load_sysroot_spec(REPO)
    assert {d["package"] for d in manifest["debian"]} == {p.removesuffix(":all") for p in spec.packages}
    assert {w["name"]: w["version"] for w in manifest["wheels"]} == dict(spec.wheels)
    assert all(len(entry["sha256"]) == 64 for entry in manifest["debian"] + manifest["wheels"])
    assert manifest["python"]["version"].startswith("3.11.")


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
        "numpy": load_sysroot_spec(REPO).wheels["numpy"],
        "dot": 11,
        "leaked": [],
        "prefix": str(root.root / "usr"),
    }

    # pytest itself runs in the guest, against a wheel installed with install_wheel.
    site = install_wheel(fake_wheel(tmp_path, "demo_pkg-1.0-py3-none-linux_aarch64.whl"), tmp_path / "demo")
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


def test_cpus_toml_features_are_what_qemu_reports(root: sysroot.Sysroot) -> None:
    """What every matrix run checks first (matrix.check_cpus), and that it refuses stale CPU data."""
    cpus = list(load_cpus(REPO).values())
    check_cpus(root, cpus)
    n1 = next(c for c in cpus if c.name == "neoverse-n1")
    stale = replace(n1, features=replace(n1.features, i8mm=True))  # as if measured with another qemu
    with pytest.raises(UserError, match=r"cpus.toml does not match .*neoverse-n1: cpus.toml says dotprod\+fp16\+i8mm"):
        check_cpus(root, [cpus[0], stale])


def test_the_classes_counted_for_a_pricing_model_give_ggml_the_claimed_features(root: sysroot.Sysroot) -> None:
    """build_config/mca.toml counts V2 on qemu's max at 128 bits: ggml must see neoverse-n2's features there
    (benchmarks/arm.py checks it before counting); a wrong features_of is refused, naming mca.toml."""
    own = own_classes(load_mca_spec(REPO, tuple(load_cpus(REPO))), load_cpus(REPO))
    assert set(own) == {"neoverse-v2"} and own["neoverse-v2"].features.sve_bits == 128
    check_cpus(root, list(own.values()), source="build_config/mca.toml")
    wrong = replace(own["neoverse-v2"], features=load_cpus(REPO)["neoverse-v1"].features)
    with pytest.raises(UserError, match=r"build_config/mca.toml does not match .*neoverse-v2: mca.toml says .*256"):
        check_cpus(root, [wrong], source="build_config/mca.toml")


def test_sigill_is_reported_as_such(root: sysroot.Sysroot, tmp_path: Path) -> None:
    outcome = run_python(
        root,
        _cpu("cortex-a53"),
        ["-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"],
        cwd=tmp_path,
    )
    assert (outcome.returncode, outcome.signal_name) == (-4, "SIGILL")
    assert list(tmp_path.iterdir()) == []  # no qemu core dump left behind


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

