"""Every command that reads a user's file or directory, fuzzed with corruptions of real inputs
(tests/support/fuzz_cases.py), a fixed-seed corpus: exit 2 with one short line naming the input, no traceback,
nothing left at the output location; read-only and full output locations exit 1 the same way. The longer
search is tests/extended/test_fuzz_inputs_long.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import fuzz_cases
from tests.support.checkout import REPO
from tests.support.fuzz import attempt, mounted_tmpfs, stop_before_work
from tests.support.fuzz_cases import Inputs, make_inputs, wheel_argv
from tests.support.refusal import assert_refused

CORPUS = settings(max_examples=40, derandomize=True, database=None, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PROPERTIES: dict[str, Callable[..., None]] = {
    "corrupt_wheel_bytes": fuzz_cases.corrupt_wheel_bytes,
    "restructured_wheel": fuzz_cases.restructured_wheel,
    "mistyped_config": fuzz_cases.mistyped_config,
    "mistyped_record": fuzz_cases.mistyped_record,
    "corrupt_model": fuzz_cases.corrupt_model,
}



@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    return make_inputs(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("name", sorted(PROPERTIES))
def test_fixed_seed_corpus(name: str, inputs: Inputs, capsys: pytest.CaptureFixture[str],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    @CORPUS
    @given(data=st.data())
    def case(data: st.DataObject) -> None:
        PROPERTIES[name](inputs, data, capsys, monkeypatch)

    case()


@pytest.mark.parametrize("command", fuzz_cases.WHEEL_COMMANDS)
@pytest.mark.parametrize("kind", ["missing", "a directory"])
def test_a_wheel_path_that_is_no_file(command: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch, inputs: Inputs) -> None:
    bad = tmp_path / "dist" / inputs.wheel.name
    if kind == "a directory":
        bad.mkdir(parents=True)
    argv = wheel_argv(command, bad, tmp_path / "out")
    if command == "index":  # DIST: missing, or a file where the directory belongs
        argv = ["index", str(tmp_path / "dist" if kind == "missing" else inputs.wheel), str(tmp_path / "out")]
        bad = tmp_path / "dist" if kind == "missing" else inputs.wheel
    with stop_before_work(monkeypatch):
        result = attempt(capsys, REPO, argv, log=tmp_path / "log", watch=tmp_path / "out")
    assert result is not None, f"{command} accepted {kind} as its input"
    assert_refused(result, bad)


@pytest.mark.parametrize("kind", ["missing", "a directory"])
def test_a_config_file_that_is_no_file(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "checkout"
    pins = root / "build_config" / "pins.toml"
    pins.parent.mkdir(parents=True)
    if kind == "a directory":
        pins.mkdir()
    result = attempt(capsys, root, ["plan"], log=tmp_path / "log")
    assert result is not None
    assert_refused(result, pins)


@pytest.fixture(scope="module")
def unwritable(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Output locations nothing can be written to: a full tmpfs, a read-only tmpfs, /proc."""
    root = tmp_path_factory.mktemp("mounts")
    with mounted_tmpfs(root / "full") as full, mounted_tmpfs(root / "ro", read_only=True) as read_only:
        yield {"full": full, "read-only": read_only, "proc": Path("/proc")}


@pytest.mark.parametrize("where", ["full", "read-only", "proc"])
@pytest.mark.parametrize("command", ["index", "convert-model"])
def test_an_output_location_that_cannot_be_written(command: str, where: str, unwritable: dict[str, Path],
                                                   inputs: Inputs, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = unwritable[where] / "llama-wheels-out"
    argv = (["index", str(inputs.wheel.parent), str(out)] if command == "index"
            else ["convert-model", str(inputs.model), str(out)])
    result = attempt(capsys, REPO, argv, log=tmp_path / "log", watch=None if where == "proc" else unwritable[where])
    assert result is not None, f"{command} wrote into {out}"
    assert_refused(result, out, code=1)


# Root reads any file whatever its mode: the command runs without the capabilities that let it (what a user is).
NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.parametrize("command", ["inspect", "audit", "index", "convert-model", "plan"])
def test_an_unreadable_input(command: str, inputs: Inputs, tmp_path: Path, config_root: Path) -> None:
    source = {"convert-model": inputs.model, "plan": config_root / "build_config" / "pins.toml"}.get(command,
                                                                                                   inputs.wheel)
    bad = source if command == "plan" else tmp_path / "in" / source.name
    if command != "plan":
        bad.parent.mkdir()
        shutil.copyfile(source, bad)
    bad.chmod(0)
    argv = {"inspect": ["inspect", str(bad)], "audit": ["audit", str(bad)],
            "index": ["index", str(bad.parent), str(tmp_path / "out")],
            "convert-model": ["convert-model", str(bad), str(tmp_path / "out" / "new.gguf")],
            "plan": ["plan"]}[command]
    result = subprocess.run([*NO_DAC, sys.executable, "-m", "llama_wheels", "--config", str(config_root), "--log",
                             str(tmp_path / "log"), *argv], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join((str(REPO / "src"), str(REPO)))})
    errors = [line for line in result.stderr.splitlines() if "error: " in line]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr and str(bad) in errors[0], result.stderr
    assert not (tmp_path / "out").exists()
