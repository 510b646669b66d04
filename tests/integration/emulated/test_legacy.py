"""The legacy pin (llama-cpp-python 0.3.4) built with and without its patch series, run under emulation.

Two real builds of the armv8.2-a+dotprod target (pins legacy and legacy-unpatched; the same CMake
arguments, cached outside the clone), then what each patch claims, on the CPUs that show it:
cortex-a53 (no dotprod), neoverse-n1 (dotprod) and max (armv9 with i8mm, built without it).
docs/legacy-0.3.4.md is the full seven-CPU version (`llama-wheels legacy-report`).
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_wheels.config import load
from llama_wheels.config.cpus import load_cpus
from llama_wheels.config.platforms import platform
from llama_wheels.core.cache import Cache
from llama_wheels.emulation.qemu import install_wheel, run_python
from llama_wheels.emulation.sysroot import ensure_sysroot
from llama_wheels.judges.matrix import probe_python, standalone_env
from llama_wheels.reports import builder, legacy
from llama_wheels.stages.repair import check_wheel
from llama_wheels.standalone.models import write_t5_model
from tests.support.checkout import REPO, build_target, cli, pinned
from tests.support.wheelfactory import rewritten

TARGET = "linux-aarch64-armv8.2-dotprod"


CPUS = ("cortex-a53", "neoverse-n1", "max")


@pytest.fixture(scope="session")
def patched_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_target(tmp_path_factory, TARGET, "--pin", "legacy", "--no-verify")


@pytest.fixture(scope="session")
def unpatched_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stock 0.3.4 build, as `llama-wheels legacy-report` builds it: through the pipeline without the ISA
    audit, which refuses it (test_the_audit_refuses_the_unpatched_build)."""
    [before] = [b for b in legacy.BUILDS if b.role == "before"]
    return builder.build_wheels(load(REPO), Cache.from_env(), tmp_path_factory.mktemp("dist"), [before])["before"]


@pytest.fixture(scope="module")
def sites(patched_wheel: Path, unpatched_wheel: Path) -> Iterator[dict[str, Path]]:
    with tempfile.TemporaryDirectory(prefix="llama-wheels-legacy-test-") as scratch:
        yield {role: install_wheel(wheel, Path(scratch) / role)
               for role, wheel in (("after", patched_wheel), ("before", unpatched_wheel))}


def test_legacy_wheels_hold_only_the_package(patched_wheel: Path, unpatched_wheel: Path) -> None:
    """Patch 0001 (both pins): the stock layout cannot even be repaired; with it only llama_cpp/ ships."""
    for wheel in (patched_wheel, unpatched_wheel):
        check_wheel(wheel, platform("linux-aarch64"))
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
        dist_info = f"llama_cpp_python-{pinned('legacy').version}.dist-info"
        assert {n.split("/")[0] for n in names} == {"llama_cpp", dist_info}
        assert "llama_cpp/lib/libllama.so" in names
    with zipfile.ZipFile(patched_wheel) as archive:
        assert archive.read("llama_cpp/lib/cpu-isa.txt").decode().strip() == "armv8.2-a+dotprod"  # 0005
    with zipfile.ZipFile(unpatched_wheel) as archive:
        assert "llama_cpp/lib/cpu-isa.txt" not in archive.namelist()


def test_the_audit_refuses_the_unpatched_build(unpatched_wheel: Path, tmp_path: Path) -> None:
    """The stock build's dotprod code runs unguarded (no import check: that is patch 0005), so `build` stops it
    at the ISA audit and nothing reaches dist/; the same wheel is the legacy report's "before"."""
    dist = tmp_path / "dist"
    result = cli("--log", str(tmp_path / "log"), "build", TARGET, "--pin", "legacy-unpatched", "--no-verify",
                 "--dist", str(dist))
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"llama-wheels: error: ISA audit of {unpatched_wheel.name}: "), last
    assert "need dotprod" in last and "llama_cpp/lib/libggml-cpu.so" in last, last
    assert not dist.exists() or not list(dist.iterdir())


def test_legacy_matrix(patched_wheel: Path, unpatched_wheel: Path, tmp_path: Path) -> None:
    """Patch 0005 on the matrix: SIGILL before, a clean refusal after; the same 4x4 layout where both run."""
    out = tmp_path / "report"
    args = [a for cpu in CPUS for a in ("--cpu", cpu)]
    result = cli("--log", str(tmp_path / "test.log"), "test", str(patched_wheel), str(unpatched_wheel), *args,
                 "--out", str(out), timeout=1800)
    report = json.loads((out / "matrix.json").read_text())
    table = (out / "matrix.txt").read_text()
    assert result.returncode == 1, table  # the unpatched wheel crashes on cortex-a53
    patched = f"{patched_wheel.parent.name}/{patched_wheel.name}"  # both wheels have the same file name
    cells = {(c["wheel"] == patched, c["cpu"]): c for c in report["cells"]}
    after, before = {cpu: cells[True, cpu] for cpu in CPUS}, {cpu: cells[False, cpu] for cpu in CPUS}

    assert after["cortex-a53"]["verdict"] == "unsupported", table
    assert "lacks dotprod" in after["cortex-a53"]["detail"]
    assert before["cortex-a53"]["verdict"] == "crash" and "SIGILL" in before["cortex-a53"]["detail"], table
    for cpu in ("neoverse-n1", "max"):  # max has i8mm, but the wheel was compiled without it
        assert after[cpu]["verdict"] == "pass" and after[cpu]["expected_layout"] == "q4_0_4x4", table
        assert after[cpu]["layout"] == before[cpu]["layout"] == "q4_0_4x4", table
        # judged by its provenance record (built for armv8.2-a+dotprod), though it carries no cpu-isa.txt
        assert before[cpu]["verdict"] == "pass" and before[cpu]["expected_layout"] == "q4_0_4x4", table
        assert after[cpu]["tokens"] == before[cpu]["tokens"]


def test_ggml_dotprod_probe_matches_hwcap(sites: dict[str, Path], cache: Cache) -> None:
    """Patch 0002: unpatched ggml claims dotprod on a CPU without it; patched ggml tells the truth."""
    sysroot = ensure_sysroot(cache)
    cpus = load_cpus(REPO)
    probes = {(role, cpu): legacy._probe_dotprod(sysroot, cpus[cpu], site)
              for role, site in sites.items() for cpu in ("cortex-a53", "neoverse-n1")}
    assert probes["after", "cortex-a53"] == {"ggml": False, "hwcap": False}
    assert probes["before", "cortex-a53"] == {"ggml": True, "hwcap": False}, "the `&&` bug is not visible"
    assert probes["after", "neoverse-n1"] == probes["before", "neoverse-n1"] == {"ggml": True, "hwcap": True}


def test_model_with_unused_tensor_loads(sites: dict[str, Path], cache: Cache, tmp_path: Path) -> None:
    """Patch 0003: a T5 model (cross_attn_rel_b is used by no op) kills the unpatched load with SIGSEGV."""
    model = write_t5_model(tmp_path / "t5.gguf")
    sysroot = ensure_sysroot(cache)
    cpu = load_cpus(REPO)["neoverse-n1"]
    assert legacy._probe_unused_tensor_model(sysroot, cpu, sites["after"], model) == "loads"
    before = legacy._probe_unused_tensor_model(sysroot, cpu, sites["before"], model)
    assert before == "died of SIGSEGV while loading"


def test_a_wheel_whose_record_promises_use_extra_bufts_fails_without_it(unpatched_wheel: Path, tmp_path: Path) -> None:
    """The wheel suite skips the repack on/off tests only for a stock wheel: the unpatched 0.3.4 wheel whose
    record is made to list the use_extra_bufts patch fails them instead."""
    def promising(data: bytes) -> bytes:
        doc = json.loads(data)
        doc["patches"].append({"name": "0004-use-extra-bufts.patch", "sha256": "0" * 64})
        return json.dumps(doc).encode()

    cpu = load_cpus(REPO)["neoverse-n1"]
    sysroot = ensure_sysroot(Cache.from_env())
    env = {**standalone_env(), "LLAMA_WHEELS_PROBE_PYTHON": probe_python(sysroot, cpu)}
    results = {}
    promised = rewritten(unpatched_wheel, tmp_path / "promising", {"llama_wheels.json": promising})
    for label, wheel in (("stock", unpatched_wheel), ("promising", promised)):
        site = install_wheel(wheel, tmp_path / f"site-{label}")
        outcome = run_python(sysroot, cpu,
                             ["-m", "pytest", "-q", str(REPO / "wheel_tests"), "-p", "no:cacheprovider",
                              "-k", "use_extra_bufts or on_off", "--basetemp", str(tmp_path / f"tmp-{label}")],
                             pythonpath=[site], env=env, cwd=tmp_path, timeout=1200)
        results[label] = (outcome.returncode, outcome.output.strip().splitlines()[-1])
    assert results["stock"][0] == 0 and "skipped" in results["stock"][1], results
    assert results["promising"][0] != 0 and "failed" in results["promising"][1], results

