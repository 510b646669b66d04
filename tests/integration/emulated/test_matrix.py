"""The emulated CPU matrix on real wheels: the default wheel everywhere, a fixed-ISA wheel where it
cannot run, and a deliberately wrong wheel that the harness must catch (not hang on, not crash with)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from llama_wheels import oracle
from llama_wheels.binaries.wheel import cpu_variants
from llama_wheels.config.cpus import load_cpus
from llama_wheels.core.cache import Cache
from llama_wheels.emulation.qemu import install_wheel, run_python
from llama_wheels.emulation.sysroot import ensure_sysroot
from llama_wheels.judges.matrix import probe_python, standalone_env
from llama_wheels.standalone import hostcpu
from tests.support.checkout import REPO, build_target, cli, processes_mentioning
from tests.support.processes import interruptible, wait_for
from tests.support.wheelfactory import rewritten


def run_matrix(tmp_path: Path, *args: str) -> tuple[int, dict[str, dict[str, object]], str]:
    out = tmp_path / "report"
    result = cli("--log", str(tmp_path / "test.log"), "test", *args, "--out", str(out), timeout=1800)
    assert (out / "matrix.json").is_file(), result.stderr[-3000:]
    report = json.loads((out / "matrix.json").read_text())
    cells = {c["cpu"]: c for c in report["cells"]}
    return result.returncode, cells, (out / "matrix.txt").read_text()


@pytest.fixture(scope="session")
def dotprod_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_target(tmp_path_factory, "linux-aarch64-armv8.2-dotprod", "--no-verify")


def test_default_wheel_passes_on_every_cpu(default_wheel: Path, tmp_path: Path) -> None:
    """Issue acceptance: variant and Q4_0 layout per CPU as the selection rules give, tokens identical."""
    code, cells, table = run_matrix(tmp_path, str(default_wheel))
    print(table)
    assert code == 0, table
    expected = {
        "cortex-a53": ("armv8.0_1", "none"),
        "cortex-a72": ("armv8.0_1", "none"),
        "a64fx": ("armv8.0_1", "none"),
        "cortex-a55": ("armv8.2_2", "q4_0_4x4"),
        "cortex-a76": ("armv8.2_2", "q4_0_4x4"),
        "neoverse-n1": ("armv8.2_2", "q4_0_4x4"),
        "max-nosve": ("armv8.6_nosve", "q4_0_4x8"),  # patch 0007
        "neoverse-v1": ("armv8.6_1", "q4_0_8x8"),
        "neoverse-n2": ("armv8.6_nosve", "q4_0_4x8"),  # 128-bit SVE: the NEON sibling (patch 0009)
        "cortex-a710": ("armv8.6_nosve", "q4_0_4x8"),
        "max": ("armv9.2_2", "q4_0_4x8"),
        "max-sve256": ("armv9.2_2", "q4_0_8x8"),
    }
    assert {cpu: (c["variant"], c["layout"]) for cpu, c in cells.items()} == expected
    assert all(c["verdict"] == "pass" for c in cells.values())
    tokens = {json.dumps(c["tokens"], sort_keys=True) for c in cells.values()}
    assert len(tokens) == 1, "greedy generation differs between CPUs"
    assert all(c["repacked"] > 0 for cpu, c in cells.items() if expected[cpu][1] != "none")
    # Every repackable type, each tensor checked by the wheel suite in the cell; here the i8mm layouts the
    # ninth variant (patch 0007) gives an i8mm CPU without SVE, and the K-quant layouts on SVE-512 (0006).
    for cpu in ("max-nosve", "neoverse-n2"):  # i8mm without SVE (0007), and on 128-bit SVE (0009)
        nosve = cells[cpu]["layouts"]
        assert (nosve["Q4_0"], nosve["Q4_K"], nosve["Q6_K"], nosve["Q8_0"]) == ("q4_0_4x8", "q4_K_8x8", "q6_K_8x8",
                                                                              "q8_0_4x8"), table
    assert set(cells["max"]["layouts"]) >= {"Q4_0", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "IQ4_NL", "MXFP4"}, table


def test_a_dispatch_wheel_that_lost_variants_fails_the_matrix(default_wheel: Path, tmp_path: Path) -> None:
    """The expectation comes from the wheel's provenance record (every variant the pinned ggml declares), not
    from what the wheel happens to contain: without its armv8.2+ libraries it still loads and runs on
    neoverse-n1 (armv8.0_1, no repacking), and that is a failure."""
    lost = tmp_path / "lost" / default_wheel.name
    lost.parent.mkdir()
    with zipfile.ZipFile(default_wheel) as src, zipfile.ZipFile(lost, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if "libggml-cpu-armv8.0" in item.filename or "libggml-cpu-armv" not in item.filename:
                dst.writestr(item, src.read(item))
    code, cells, table = run_matrix(tmp_path, str(lost), "--cpu", "neoverse-n1")
    assert code == 1, table
    cell = cells["neoverse-n1"]
    assert cell["verdict"] == "fail" and cell["expected_variant"] == "armv8.2_2", table
    assert cell["variant"] == "armv8.0_1" and cell["expected_layout"] == "q4_0_4x4", table


def test_a_slow_cell_ends_as_timeout_and_the_matrix_goes_on(default_wheel: Path, tmp_path: Path) -> None:
    code, cells, table = run_matrix(tmp_path, str(default_wheel), "--cpu", "cortex-a53", "--cpu", "neoverse-n1",
                                    "--cell-timeout", "3")
    assert code == 1, table
    assert {cpu: c["verdict"] for cpu, c in cells.items()} == {"cortex-a53": "timeout", "neoverse-n1": "timeout"}
    assert all("timed out after" in str(c["detail"]) for c in cells.values()), table


def wheel_suite_without_expectation(wheel: Path, cpu: str, tmp_path: Path) -> tuple[int, str]:
    """The wheel suite in the emulated Python on ``cpu`` with no LLAMA_WHEELS_EXPECT_LAYOUT: it must derive
    what to expect from the CPU it runs on and the wheel's provenance record, as on a CI runner."""
    site = install_wheel(wheel, tmp_path / f"site-{cpu}")
    sysroot, on = ensure_sysroot(Cache.from_env()), load_cpus(REPO)[cpu]
    env = {**standalone_env(), "LLAMA_WHEELS_PROBE_PYTHON": probe_python(sysroot, on)}
    outcome = run_python(sysroot, on, ["-m", "pytest", "-q", str(REPO / "wheel_tests"), "-p", "no:cacheprovider",
                                       "--basetemp", str(tmp_path / f"tmp-{cpu}")],
                         pythonpath=[site], env=env, cwd=tmp_path, timeout=1200)
    return outcome.returncode, outcome.output


def test_the_wheel_suite_derives_its_expectation_and_catches_lost_variants(default_wheel: Path,
                                                                           tmp_path: Path) -> None:
    """Issue 12's first sabotage: no environment variable, neoverse-n1. The intact wheel passes having checked
    q4_0_4x4; without its armv8.2+ libraries the same suite fails (armv8.0_1 repacks nothing)."""
    code, output = wheel_suite_without_expectation(default_wheel, "neoverse-n1", tmp_path / "intact")
    assert code == 0, output[-3000:]
    assert " skipped" not in output.splitlines()[-1], output[-3000:]
    with zipfile.ZipFile(default_wheel) as archive:
        above_v8_0 = [v for v in cpu_variants(archive.namelist()) if v != "armv8.0_1"]
    lost = rewritten(default_wheel, tmp_path / "lost", {
        f"libggml-cpu-{variant}.so": lambda _: None for variant in above_v8_0})
    code, output = wheel_suite_without_expectation(lost, "neoverse-n1", tmp_path / "lost")
    assert code != 0, output[-3000:]
    assert "test_expect_layout_is_observed" in output and "expected q4_0_4x4" in output, output[-3000:]


def test_fixed_isa_wheel_refuses_unsupported_cpu(dotprod_wheel: Path, tmp_path: Path) -> None:
    """Patch 0002: an armv8.2+dotprod wheel on cortex-a53 says why at import instead of SIGILL."""
    code, cells, table = run_matrix(tmp_path, str(dotprod_wheel), "--cpu", "cortex-a53", "--cpu", "neoverse-n1")
    assert code == 0, table
    assert cells["cortex-a53"]["verdict"] == "unsupported"
    assert "lacks dotprod" in str(cells["cortex-a53"]["detail"])
    assert cells["neoverse-n1"]["verdict"] == "pass"
    assert cells["neoverse-n1"]["layout"] == "q4_0_4x4"


def with_isa(wheel: Path, isa: str | None, where: Path) -> Path:
    """A copy of ``wheel`` whose lib/cpu-isa.txt says ``isa`` (None: has none)."""
    return rewritten(wheel, where, {"lib/cpu-isa.txt": lambda _: None if isa is None else isa.encode() + b"\n"})


def claiming(wheel: Path, isa: str, where: Path, **more: Callable[[bytes], bytes | None]) -> Path:
    """A copy of the fixed-ISA ``wheel`` that says, in its provenance record and in lib/cpu-isa.txt alike, it
    was built for ``isa``."""
    def record(data: bytes) -> bytes:
        doc = json.loads(data)
        doc["target"]["switches"]["arm_arch"] = isa
        return json.dumps(doc).encode()

    return rewritten(wheel, where, {"lib/cpu-isa.txt": lambda _: isa.encode() + b"\n", "llama_wheels.json": record,
                                    **more})


def test_an_architecture_level_is_refused_by_the_features_it_implies(dotprod_wheel: Path, tmp_path: Path) -> None:
    """A fixed ISA written as a bare level: armv8.6-a makes i8mm and bf16 mandatory, which neoverse-n1 lacks.
    Patch 0002 refuses it at import (built for real, such a wheel died of SIGILL there with the suffix-only
    check), and the matrix expects exactly that refusal. A cpu-isa.txt that disagrees with the record is
    refused before anything runs."""
    claimed = claiming(dotprod_wheel, "armv8.6-a", tmp_path / "claimed")
    code, cells, table = run_matrix(tmp_path, str(claimed), "--cpu", "neoverse-n1")
    assert code == 0, table
    assert cells["neoverse-n1"]["verdict"] == "unsupported"
    # everything armv8.6-a implies that N1 (armv8.2-a) lacks, among them ggml's bf16 and i8mm
    assert re.search(r"built for armv8\.6-a, but this CPU lacks [a-z0-9, -]*\bbf16, [a-z0-9, -]*\bi8mm\b",
                     str(cells["neoverse-n1"]["detail"])), cells["neoverse-n1"]["detail"]
    disagreeing = with_isa(dotprod_wheel, "armv8.6-a", tmp_path / "disagreeing")
    refused = cli("test", str(disagreeing), "--cpu", "neoverse-n1", "--out", str(tmp_path / "no-report"))
    assert refused.returncode == 2 and not (tmp_path / "no-report").exists()
    assert "lib/cpu-isa.txt says armv8.6-a but its provenance record says arm_arch armv8.2-a+dotprod" in refused.stderr


def test_a_future_armv8_4_wheel_is_refused_on_a_cortex_a76(dotprod_wheel: Path, tmp_path: Path) -> None:
    """The fixed-ISA gap under qemu: armv8.4-a implies dotprod, which the A76 (Raspberry Pi 5) has, and FCMA,
    JSCVT, FlagM, LRCPC2 and PAuth, which it lacks. The wheel's own guard refuses it at import, naming them,
    where a guard of ggml's features alone let it import (and its code could die of SIGILL)."""
    claimed = claiming(dotprod_wheel, "armv8.4-a", tmp_path / "claimed")
    code, cells, table = run_matrix(tmp_path, str(claimed), "--cpu", "cortex-a76")
    detail = str(cells["cortex-a76"]["detail"])
    assert "this CPU lacks complxnum, flagm, jsconv, pauth, rcpc-immo" in detail, table
    # cpus.toml describes ggml's features only, so the oracle expected an import: the matrix fails the cell
    assert code == 1 and cells["cortex-a76"]["verdict"] != "pass", table


def test_the_shipped_import_check_reads_an_isa_as_the_oracle_does(dotprod_wheel: Path) -> None:
    """Patch 0002's llama_cpp/_backends.py must stay standalone in the wheel, so it has its own reading of an
    -march; this keeps the one the wheel ships the oracle's (all an -march implies that a hwcap shows;
    tests/unit/test_import_check.py checks the patch files the same way)."""
    with zipfile.ZipFile(dotprod_wheel) as archive:
        source = archive.read("llama_cpp/_backends.py").decode()
    spec = importlib.util.spec_from_loader("shipped_backends", loader=None)
    assert spec is not None
    shipped = importlib.util.module_from_spec(spec)
    exec(compile(source, "llama_cpp/_backends.py", "exec"), shipped.__dict__)
    isas = ["armv8-a", "armv8.2-a+dotprod", "armv8.2-a+dotprod+fp16", "armv8.4-a", "armv8.6-a", "armv8.6-a+nobf16",
            "armv9-a", "armv9-a+nosve", "armv9.2-a", "armv9.2-a+sme", "armv8.2-a+sve2", "armv8.2-a+sve+nofp16",
            "armv8.2-a+i8mm+nodotprod", "armv9.4-a+nosve2"]
    for isa in isas:
        assert set(shipped.isa_features(isa)) == oracle.instruction_features(isa) & set(hostcpu.HWCAPS), isa
    with pytest.raises(ImportError, match=r"names no armvX\.Y-a architecture"):
        shipped.isa_features("x86-64-v3")


def test_a_wheel_that_runs_where_it_must_refuse_fails(dotprod_wheel: Path, tmp_path: Path) -> None:
    """A broken import guard: the wheel says (record and cpu-isa.txt) it needs i8mm, its check is neutered, and
    on neoverse-n1 (no i8mm) its dotprod code runs fine. That it ran is the failure (and the matrix says so even
    when the suite passes: "ran on a CPU lacking ... must refuse it at import")."""
    def neutered(data: bytes) -> bytes:
        source = data.decode()
        assert "    missing = missing_features(isa, have)\n" in source
        return source.replace("    missing = missing_features(isa, have)\n", "    missing = []\n").encode()

    broken = claiming(dotprod_wheel, "armv8.2-a+dotprod+i8mm", tmp_path / "broken", **{"_backends.py": neutered})
    code, cells, table = run_matrix(tmp_path, str(broken), "--cpu", "neoverse-n1")
    assert code == 1, table
    assert cells["neoverse-n1"]["verdict"] == "fail"
    # the matrix notes it at import; the wheel suite, deriving what to expect, cannot accept it either
    assert str(cells["neoverse-n1"]["detail"]).startswith("imported on a CPU lacking i8mm; "), table


def test_wrong_wheel_is_caught_as_a_crash(dotprod_wheel: Path, tmp_path: Path) -> None:
    """Without its CPU guard the same wheel dies of SIGILL on cortex-a53: a verdict, not a harness crash."""
    wrong = with_isa(dotprod_wheel, None, tmp_path)
    code, cells, table = run_matrix(tmp_path, str(wrong), "--cpu", "cortex-a53")
    assert code == 1, table
    assert cells["cortex-a53"]["verdict"] == "crash"
    assert "SIGILL" in str(cells["cortex-a53"]["detail"])


def test_interrupted_matrix_stops_every_emulated_run_and_writes_no_report(default_wheel: Path,
                                                                            tmp_path: Path) -> None:
    """Ctrl-C while cells run on two workers: every qemu stops, no further cell starts, no report appears."""
    scratch, out, log = tmp_path / "tmp", tmp_path / "report", tmp_path / "test.log"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TMPDIR": str(scratch)}
    # A deliverable SIGINT even in a suite started with it ignored; everything killed if the test fails first.
    with interruptible([sys.executable, "-m", "llama_wheels", "--log", log, "test", default_wheel, "--jobs", "2",
                        "--out", out], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        # both workers are inside an emulated run
        wait_for(lambda: len(processes_mentioning(str(scratch))) >= 2, f"two emulated runs (log {log})",
                 timeout=300, proc=proc)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 130, stderr[-2000:]
        assert not processes_mentioning(str(scratch)), "an emulated run outlived the interrupted matrix"
    assert stderr.strip().splitlines()[-1].startswith("llama-wheels: error: interrupted")
    assert not processes_mentioning(str(scratch)), "an emulated run outlived the interrupted matrix"
    assert not out.exists()
    assert not list(scratch.iterdir()), "the matrix's scratch directory was left behind"

