"""The wheel suite's own guards, with negative tests: its per-type checks run on probe results in which one
type falls back while another repacks, and in which nothing is repacked, and must fail (the same checks pass on
the results ggml's rules give); a model whose type the wheel lacks a binding for fails where the wheel's
release must have it; the matrix finds the import probe's line in its whole output and always names the
probe interpreter."""

from __future__ import annotations

import importlib.util
import platform
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from llama_wheels import oracle
from llama_wheels.config.cpus import load_cpus
from llama_wheels.core import runner
from llama_wheels.emulation.qemu import Sysroot
from llama_wheels.judges.matrix import Bed, import_info, suite_env
from llama_wheels.standalone import models
from tests.support.checkout import REPO

WHEEL_TESTS = REPO / "wheel_tests"
LAYOUT = "q4_0_4x8"  # an i8mm CPU's: Q4_0 and Q8_0 both repack there
MODELS = ("q4_0", "q8_0")


def _load(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """wheel_tests/NAME.py as the module ``wheel_suite_NAME`` (for this test only)."""
    spec = importlib.util.spec_from_file_location(f"wheel_suite_{name}", WHEEL_TESTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def suite(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, ModuleType]]:
    """The wheel suite's conftest and test module, judging for an aarch64 CPU whose Q4_0 layout is LAYOUT."""
    monkeypatch.syspath_prepend(str(WHEEL_TESTS))
    monkeypatch.setenv("LLAMA_WHEELS_EXPECT_LAYOUT", LAYOUT)
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    yield _load("conftest", monkeypatch), _load("test_wheel", monkeypatch)
    sys.modules.pop("wheel_probe", None)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: models.write_model(models.SPECS[name], root / f"{name}.gguf") for name in MODELS}


def rule_results(model_files: dict[str, Path]) -> dict[str, dict[str, str]]:
    """What ggml's rules give every MUL_MAT weight of each model on a LAYOUT CPU: the passing probe results."""
    code, sve_bits = oracle.code_for_q4_0_layout(LAYOUT, "arm")
    results = {}
    for name, path in model_files.items():
        weights = models.file_tensors(models.SPECS[name], path)
        results[name] = {t.name: layout for t in weights if t.is_matmul_weight and (layout := oracle.repack_layout(
            t.ggml_type, t.ne1, code=code, sve_bits=sve_bits)) is not None}
    return results


def judge(suite: tuple[ModuleType, ModuleType], model_files: dict[str, Path],
          repacked: dict[str, dict[str, str]]) -> dict[str, str]:
    """Run the suite's per-type checks on these probe results: test -> "pass" or the failure."""
    conftest, tests = suite

    def probe(name: str) -> Any:
        result = {"llama": {"repacked": repacked[name]}, "errors": {}, "llama_cpp_version": oracle.TYPES_RELEASE,
                  "system_info": "CPU : NEON = 1 | ARM_FMA = 1 | REPACK = 1 |"}
        return conftest.ProbeOutcome(name, result, None, "")

    checks: dict[str, Callable[[], None]] = {
        **{f"placement[{name}]": (lambda n=name: tests.test_repack_placement(probe, models, model_files, n))
           for name in MODELS},
        "expect_layout_is_observed": lambda: tests.test_expect_layout_is_observed(probe),
    }
    verdicts = {}
    for check, run in checks.items():
        try:
            run()
            verdicts[check] = "pass"
        except AssertionError as exc:
            verdicts[check] = str(exc).splitlines()[0]
    return verdicts


def test_the_rules_results_pass(suite: tuple[ModuleType, ModuleType], model_files: dict[str, Path]) -> None:
    """The control: probe results as ggml's rules give them pass, and both types do repack there."""
    results = rule_results(model_files)
    assert all(results[name] for name in MODELS), results
    assert set(judge(suite, model_files, results).values()) == {"pass"}


def test_one_type_falling_back_while_another_repacks_fails(suite: tuple[ModuleType, ModuleType],
                                                           model_files: dict[str, Path]) -> None:
    results = {**rule_results(model_files), "q8_0": {}}  # Q8_0 falls back, Q4_0 still repacks
    verdicts = judge(suite, model_files, results)
    assert verdicts["placement[q4_0]"] == "pass" and verdicts["expect_layout_is_observed"] == "pass"
    assert verdicts["placement[q8_0]"].startswith(f"Q4_0 layout {LAYOUT} on this CPU, yet: "), verdicts


def test_nothing_repacked_fails(suite: tuple[ModuleType, ModuleType], model_files: dict[str, Path]) -> None:
    verdicts = judge(suite, model_files, {name: {} for name in MODELS})
    assert all(verdict != "pass" for verdict in verdicts.values()), verdicts


def test_a_lost_binding_fails_where_the_release_has_the_type(suite: tuple[ModuleType, ModuleType]) -> None:
    conftest, _ = suite
    probe_module = sys.modules["wheel_probe"]
    lacks = "llama_cpp has no LLAMA_FTYPE_MOSTLY_Q6_K"
    current = conftest.ProbeOutcome("q6_k", None, None, "", cannot_hold=lacks,
                                    binding_required=probe_module.binding_required(oracle.TYPES_RELEASE))
    with pytest.raises(pytest.fail.Exception, match="a binding was lost"):
        current.require("llama")
    older = conftest.ProbeOutcome("mxfp4", None, None, "", cannot_hold=lacks,
                                  binding_required=probe_module.binding_required("0.3.4"))
    with pytest.raises(pytest.skip.Exception):  # 0.3.4 predates MXFP4: nothing to hold it to
        older.require("llama")


def test_the_import_line_is_found_after_any_amount_of_output() -> None:
    """ggml's log after the probe's line pushed it out of the last 25 lines the matrix used to read."""
    outcome = runner.probe([sys.executable, "-c", "print('IMPORT {\"variant\": \"armv8.2_2\"}')\n"
                            "for n in range(200): print('ggml log line', n)"])
    assert outcome.returncode == 0
    assert import_info(outcome.output) == {"variant": "armv8.2_2"}
    assert import_info("\n".join(outcome.tail)) is None  # what the tail alone would have missed


def test_the_suite_probes_with_an_explicit_interpreter_on_the_cells_cpu(tmp_path: Path) -> None:
    cpu = load_cpus(REPO)["neoverse-n1"]
    sysroot = Sysroot(root=tmp_path / "bed", python=tmp_path / "bed/usr/bin/python3.11", site=tmp_path / "site",
                      manifest={}, qemu=tmp_path / "qemu-aarch64")
    code, _ = oracle.code_for_q4_0_layout("q4_0_4x4")
    expectation = oracle.Expectation(supported=True, code=code)
    env = suite_env(Bed(sysroot=sysroot, root=REPO, models=tmp_path / "models"), cpu, tmp_path / "r.json",
                    expectation)
    assert env["LLAMA_WHEELS_EXPECT_LAYOUT"] == "q4_0_4x4"
    assert shlex.split(env["LLAMA_WHEELS_PROBE_PYTHON"]) == [
        str(sysroot.qemu), "-cpu", cpu.qemu_cpu, "-L", str(sysroot.root), str(sysroot.python)]


_CRASHING_PROBE = """
import json, os, signal, sys
from pathlib import Path
pairs = sys.argv[2:]  # argv[1]: wheel_probe.py, which this stand-in interpreter does not run
for model, out in zip(pairs[::2], pairs[1::2]):
    if Path(model).stem == "crash":
        os.kill(os.getpid(), signal.SIGILL)  # what code the CPU lacks does to the real probe
    Path(out).write_text(json.dumps({"model": Path(model).stem}))
"""


def test_a_model_that_kills_the_probe_child_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The models share one child; the one that kills it is named with the signal, those before it keep their
    results, those after it are left for a new child (they are not failed with it)."""
    conftest = _load("conftest", monkeypatch)
    interpreter = tmp_path / "probe.py"
    interpreter.write_text(_CRASHING_PROBE)
    batch = []
    for name in ("a", "crash", "c"):
        (tmp_path / f"{name}.gguf").write_bytes(b"")
        batch.append((name, tmp_path / f"{name}.gguf", tmp_path / f"{name}.json"))
    outcomes = conftest._run_batch([sys.executable, str(interpreter)], batch, 60)
    assert list(outcomes) == ["a", "crash"]
    assert outcomes["a"].result == {"model": "a"} and outcomes["a"].failure is None
    assert outcomes["crash"].result is None and outcomes["crash"].signal == "SIGILL"
    assert outcomes["crash"].failure == "died with signal SIGILL"
    rest = conftest._run_batch([sys.executable, str(interpreter)], batch[2:], 60)
    assert rest["c"].result == {"model": "c"}
