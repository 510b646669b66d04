"""How a refusal of bad input must look, checked in one place: the command run in-process through
``cli.main``, exit 2 (1 for a failing environment), one line of at most ``LINE_LIMIT`` printable characters
that names the user's path, no traceback, and nothing left at the output location."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from llama_wheels import cli
from llama_wheels.core.errors import LINE_LIMIT

PREFIX = "llama-wheels: error: "


@dataclass(frozen=True)
class Refusal:
    code: int
    line: str  # the error line, without its "...: error: " prefix
    stderr: str
    changed: tuple[str, ...]  # what appeared, went or changed in the watched directory


def _listing(directory: Path | None) -> dict[str, tuple[int, int]]:
    if directory is None or not directory.is_dir():
        return {}
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in directory.rglob("*") if not p.is_symlink()}


def run(capsys: pytest.CaptureFixture[str], root: Path, argv: Sequence[str], *, log: Path,
        watch: Path | None = None) -> Refusal:
    """``llama-wheels --config ROOT --log LOG ARGV`` in this process: its exit code, its error line and what it
    changed in ``watch`` (the output location)."""
    before = _listing(watch)
    capsys.readouterr()
    try:
        code = cli.main(["--config", str(root), "--log", str(log), *argv])
    except SystemExit as exc:  # argparse refuses a malformed command line (exit 2, usage and one error line)
        code = exc.code if isinstance(exc.code, int) else 1
    err = capsys.readouterr().err
    after = _listing(watch)
    changed = tuple(sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n)))
    lines = [line for line in err.splitlines() if "error: " in line]
    return Refusal(code=code, line=lines[-1].split("error: ", 1)[1] if lines else "", stderr=err, changed=changed)


def assert_refused(result: Refusal, names: str | Path, *, code: int = 2, says: str = "") -> None:
    """``result`` is a proper refusal naming ``names`` (and ``says``, when given), which changed nothing."""
    context = f"exit {result.code}; stderr was:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, context
    assert result.code == code, f"not exit {code}: {context}"
    assert len([line for line in result.stderr.splitlines() if "error: " in line]) == 1, f"not one line: {context}"
    assert str(names) in result.line, f"the line does not name {names}: {context}"
    text = result.line.replace(str(names), "PATH")
    assert result.line.isprintable() and len(text) <= LINE_LIMIT, f"not one short line: {context}"
    assert says.lower() in result.line.lower(), f"the line does not say {says!r}: {context}"
    assert ".tmp-" not in result.line, f"the line names a temp path, not the user's: {context}"
    assert not result.changed, f"left at the output location: {result.changed}"

