"""The bad-input fuzzing of every command that reads a user's file or directory: corruptions of real inputs
(the wheel the suite writes with the pipeline's own writer, this checkout's build_config/, a GGUF model as an
old llama.cpp wrote it), drawn by Hypothesis, each run in-process through ``cli.main`` and judged by
``refusal.assert_refused``. tests/unit/test_fuzz_inputs.py runs a fixed-seed corpus, tests/extended/ a longer
search.

A command that accepts its (still valid) input goes on to real work: building a test bed, fetching an sdist,
compiling. Those entry points are replaced by ``Reached`` (``stop_before_work``): the property under test is
what a command says about its input, and an input that gets that far was accepted.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
import subprocess
import tomllib
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from .refusal import Refusal, run

# A draw of a value of some TOML type (what a user may mistype a value as), and of any text.
TOML_VALUES = st.one_of(st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=24),
                        st.lists(st.integers(min_value=-9, max_value=9), max_size=3),
                        st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 9), max_size=1))
MISSING = object()  # a key path's value when the key is removed


class Reached(BaseException):
    """The command accepted its input and was about to start real work."""


# The first call of real work per command (module, attribute), replaced by ``Reached``.
WORK = (
    ("llama_wheels.judges.matrix", "ensure_bed"),  # test: the emulated bed (after every wheel was read)
    ("llama_wheels.judges.isa_audit", "prepare_pin"),  # audit: the wheel's pinned source
    ("llama_wheels.stages.repair", "repair_wheel"),  # repair: auditwheel
    ("llama_wheels.pipeline", "build_targets"),  # build
    ("llama_wheels.pins.intake", "check_pins"),  # pin check
    ("llama_wheels.pins.intake", "find_sdist"),  # pin add: the package index
)


@contextmanager
def stop_before_work(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import importlib

    def reached(*args: object, **kwargs: object) -> None:
        raise Reached

    with monkeypatch.context() as patch:
        for module, name in WORK:
            patch.setattr(importlib.import_module(module), name, reached)
        yield


def attempt(capsys: pytest.CaptureFixture[str], root: Path, argv: Sequence[str], *, log: Path,
            watch: Path | None = None) -> Refusal | None:
    """``run``, or None when the command accepted its input (it reached real work or ended with 0)."""
    try:
        result = run(capsys, root, argv, log=log, watch=watch)
    except Reached:
        capsys.readouterr()
        return None
    return None if result.code == 0 else result


# --- bytes -------------------------------------------------------------------------------------------------

def flipped(data: bytes, edits: Sequence[tuple[int, int]]) -> bytes:
    """``data`` with each (offset modulo its length, xor mask 1-255) applied."""
    out = bytearray(data)
    for offset, mask in edits:
        out[offset % len(out)] ^= mask
    return bytes(out)


# --- wheels ------------------------------------------------------------------------------------------------

def rewrite_zip(src: Path, dst: Path, *, remove: frozenset[str] = frozenset(), rename: dict[str, str] | None = None,
                replace: dict[str, bytes] | None = None) -> Path:
    """``src``'s members into ``dst``: ``remove`` left out, ``rename`` renamed, ``replace`` given new bytes."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            if info.filename in remove:
                continue
            data = (replace or {}).get(info.filename, old.read(info))
            info.filename = (rename or {}).get(info.filename, info.filename)
            new.writestr(info, data)
    return dst


def key_paths(doc: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of a nested dict (tables and the values in them), depth first."""
    if not isinstance(doc, dict):
        return []
    paths = []
    for key, value in doc.items():
        paths.append((*prefix, key))
        paths += key_paths(value, (*prefix, key))
    return paths


def edited(doc: dict[str, Any], path: tuple[str, ...], value: object) -> dict[str, Any]:
    """A deep copy of ``doc`` with ``path`` set to ``value`` (``MISSING``: removed)."""
    copy: dict[str, Any] = json.loads(json.dumps(doc))
    table = copy
    for key in path[:-1]:
        table = table[key]
    if value is MISSING:
        del table[path[-1]]
    else:
        table[path[-1]] = value
    return copy


def record_member(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/llama_wheels.json")]
    return name


# --- TOML --------------------------------------------------------------------------------------------------

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE.match(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def dumps_toml(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> str:
    """``doc`` as TOML (tables as [headers]; what tomllib reads back as ``doc``)."""
    plain = [f"{_key(k)} = {_value(v)}" for k, v in doc.items() if not isinstance(v, dict) or not v]
    lines = ([f"[{'.'.join(_key(k) for k in prefix)}]"] if prefix and plain else []) + plain
    text = "\n".join(lines) + ("\n" if lines else "")
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            text += "\n" + dumps_toml(value, (*prefix, key))
    return text


def read_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


# --- output locations ---------------------------------------------------------------------------------------

@contextmanager
def mounted_tmpfs(where: Path, *, read_only: bool = False, size: str = "64k") -> Iterator[Path]:
    """A small tmpfs at ``where`` (read-only, or filled to the last byte): the output location a command must
    refuse in one line without leaving anything there. A machine that cannot mount one fails the test."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        else:
            try:
                with (where / "filler").open("wb", buffering=0) as fh:  # full: every block taken
                    while True:
                        fh.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)
        shutil.rmtree(where, ignore_errors=True)
