"""The fuzz properties themselves, shared by the fixed-seed corpus (tests/unit/test_fuzz_inputs.py) and the
longer search (tests/extended/test_fuzz_inputs_long.py): each draws one corruption of a real input, runs one
command on it and holds the result to ``refusal.assert_refused`` (or to nothing, when the input was still
good: a corruption need not break it)."""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import strategies as st

from llama_wheels.gguf_tools import convert
from llama_wheels.standalone import models

from .checkout import REPO
from .fuzz import (
    MISSING,
    TOML_VALUES,
    attempt,
    dumps_toml,
    edited,
    flipped,
    key_paths,
    read_toml,
    record_member,
    rewrite_zip,
    stop_before_work,
)
from .refusal import assert_refused
from .wheelfactory import built_wheel

WHEEL_COMMANDS = ("inspect", "audit", "test", "repair", "index")
CONFIG_FILES = ("pins.toml", "targets.toml", "cpus.toml")
EDITS = st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)), min_size=1,
                 max_size=4)


@dataclass(frozen=True)
class Inputs:
    """The real inputs every case starts from."""

    wheel: Path  # a finished wheel with its provenance record, written by the pipeline's writer
    model: Path  # a GGUF with the Q4_0_4_4 tensors an old llama.cpp wrote
    root: Path  # scratch space


def make_inputs(root: Path) -> Inputs:
    q4 = models.write_model(models.SPECS["q4_0-odd-rows"], root / "q4_0.gguf")
    convert.to_old_format(q4, root / "old.gguf", next(iter(convert.OLD_TYPES.values())))
    return Inputs(wheel=built_wheel(root / "dist"), model=root / "old.gguf", root=root)


@contextmanager
def scratch(inputs: Inputs) -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(dir=inputs.root, prefix="case-"))
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


def damage(original: bytes, data: st.DataObject) -> bytes:
    """``original`` truncated at any offset, or with bytes flipped anywhere."""
    if data.draw(st.booleans(), label="truncate"):
        return original[:data.draw(st.integers(0, len(original) - 1), label="at")]
    return flipped(original, data.draw(EDITS, label="flips"))


def wheel_argv(command: str, wheel: Path, out: Path) -> list[str]:
    return {"inspect": ["inspect", str(wheel)], "audit": ["audit", str(wheel)],
            "test": ["test", str(wheel), "--out", str(out)], "repair": ["repair", str(wheel), "--dist", str(out)],
            "index": ["index", str(wheel.parent), str(out)]}[command]


def judge_wheel(inputs: Inputs, data: st.DataObject, bad: Path, capsys: pytest.CaptureFixture[str],
                monkeypatch: pytest.MonkeyPatch) -> None:
    command = data.draw(st.sampled_from(WHEEL_COMMANDS), label="command")
    out = bad.parent.parent / "out"
    with stop_before_work(monkeypatch):
        result = attempt(capsys, REPO, wheel_argv(command, bad, out), log=bad.parent.parent / "log", watch=out)
    if result is not None:
        assert_refused(result, bad.name)


def corrupt_wheel_bytes(inputs: Inputs, data: st.DataObject, capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Truncated at any offset, or bytes flipped anywhere."""
    damaged = damage(inputs.wheel.read_bytes(), data)
    with scratch(inputs) as where:
        bad = where / "dist" / inputs.wheel.name
        bad.parent.mkdir()
        bad.write_bytes(damaged)
        judge_wheel(inputs, data, bad, capsys, monkeypatch)


def restructured_wheel(inputs: Inputs, data: st.DataObject, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Members removed or renamed."""
    edited_wheel(inputs, data, capsys, monkeypatch, ("remove", "rename"))


def mistyped_record(inputs: Inputs, data: st.DataObject, capsys: pytest.CaptureFixture[str],
                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The provenance record with a key removed or given a value of the wrong type."""
    edited_wheel(inputs, data, capsys, monkeypatch, ("record",))


def edited_wheel(inputs: Inputs, data: st.DataObject, capsys: pytest.CaptureFixture[str],
                 monkeypatch: pytest.MonkeyPatch, kinds: tuple[str, ...]) -> None:
    """Members removed or renamed, or the provenance record with a key removed or given a mistyped value."""
    with zipfile.ZipFile(inputs.wheel) as archive:
        names = archive.namelist()
        record = json.loads(archive.read(record_member(inputs.wheel)))
    with scratch(inputs) as where:
        bad = where / "dist" / inputs.wheel.name
        how = data.draw(st.sampled_from(kinds), label="how")
        if how == "remove":
            gone = data.draw(st.sets(st.sampled_from(names), min_size=1), label="removed")
            rewrite_zip(inputs.wheel, bad, remove=frozenset(gone))
        elif how == "rename":
            name = data.draw(st.sampled_from(names), label="member")
            new = data.draw(st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1,
                                    max_size=40), label="new name")
            rewrite_zip(inputs.wheel, bad, rename={name: new})
        else:
            path = data.draw(st.sampled_from(key_paths(record)), label="key")
            value = data.draw(st.one_of(st.just(MISSING), TOML_VALUES), label="value")
            text = json.dumps(edited(record, path, value)).encode()
            rewrite_zip(inputs.wheel, bad, replace={record_member(inputs.wheel): text})
        judge_wheel(inputs, data, bad, capsys, monkeypatch)


def mistyped_config(inputs: Inputs, data: st.DataObject, capsys: pytest.CaptureFixture[str],
                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A value of build_config/ of the wrong type or range, or a key removed, read by each command that loads
    the configuration."""
    file = data.draw(st.sampled_from(CONFIG_FILES), label="file")
    with scratch(inputs) as where:
        root = where / "checkout"
        shutil.copytree(REPO / "build_config", root / "build_config")
        shutil.copytree(REPO / "patches", root / "patches")
        target = root / "build_config" / file
        doc = read_toml(target)
        path = data.draw(st.sampled_from(key_paths(doc)), label="key")
        value = data.draw(st.one_of(st.just(MISSING), TOML_VALUES), label="value")
        target.write_text(dumps_toml(edited(doc, path, value)))
        commands = {"cpus.toml": [["test", str(inputs.wheel), "--out", str(where / "out")]]}.get(file, [
            ["plan"], ["build", "--dist", str(where / "out")], ["pin", "check", "--all"], ["pin", "add", "9.9.9"]])
        argv = data.draw(st.sampled_from(commands), label="command")
        with stop_before_work(monkeypatch):
            result = attempt(capsys, root, argv, log=where / "log", watch=where / "out")
        if result is not None:
            assert_refused(result, target.name)


def corrupt_model(inputs: Inputs, data: st.DataObject, capsys: pytest.CaptureFixture[str],
                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A GGUF truncated or with bytes flipped, converted by convert-model."""
    damaged = damage(inputs.model.read_bytes(), data)
    with scratch(inputs) as where:
        bad = where / "old.gguf"
        bad.write_bytes(damaged)
        out = where / "out" / "new.gguf"
        result = attempt(capsys, REPO, ["convert-model", str(bad), str(out)], log=where / "log", watch=out.parent)
        if result is not None:
            assert_refused(result, bad)
