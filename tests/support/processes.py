"""Starting a subject that a test interrupts, and ending everything it started whatever the test's outcome.

A suite run as a background job of a non-interactive shell (``nohup ... &``, CI wrappers) starts with SIGINT
ignored, and an ignored disposition is inherited across exec: a Ctrl-C test would send a SIGINT nobody
receives. ``interruptible`` starts its subject with SIGINT and SIGTERM at their defaults and unblocked, and
on leaving kills the subject's whole process tree, so a failing test leaves no build running behind it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

_DELIVERABLE = (signal.SIGINT, signal.SIGTERM)


def _deliverable_signals() -> None:
    """In the forked child before exec: the dispositions an interrupt test relies on."""
    for sig in _DELIVERABLE:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _DELIVERABLE)


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now (its children, theirs, ...), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text(errors="replace")
        except OSError:
            continue  # ended meanwhile
        parents[int(stat.parent.name)] = int(text[text.rindex(")") + 2:].split()[1])
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in found:
                found.add(child)
                todo.append(child)
    return found


def running(pid: int) -> bool:
    """``pid`` exists and is not a zombie (a zombie has ended; only its exit status is left)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return False
    return text[text.rindex(")") + 2] != "Z"


def kill_tree(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL ``proc`` and every process below it (frozen first, so none escapes by forking), then reap it."""
    for _ in range(50):
        tree = descendants(proc.pid) if proc.poll() is None else set()
        if proc.poll() is not None and not tree:
            break
        for pid in tree | ({proc.pid} if proc.poll() is None else set()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        for pid in tree | ({proc.pid} if proc.poll() is None else set()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.1)
        if not tree:
            break
    proc.wait()


@contextlib.contextmanager
def interruptible(argv: Sequence[str | os.PathLike[str]], **popen: Any) -> Iterator[subprocess.Popen[str]]:
    """Popen ``argv`` (keyword arguments as for Popen; text mode) with SIGINT and SIGTERM deliverable; on
    leaving, whatever is still running of it is killed and its pipes are closed."""
    proc: subprocess.Popen[str] = subprocess.Popen(
        [os.fspath(a) for a in argv], preexec_fn=_deliverable_signals, text=True, **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            kill_tree(proc)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        proc.wait()


def wait_for(predicate: Any, what: str, *, timeout: float = 60, proc: subprocess.Popen[Any] | None = None) -> None:
    """Poll ``predicate()`` until true; fail naming ``what`` after ``timeout`` s or when ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc is None or proc.poll() is None, f"the subject ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f}s"
        time.sleep(0.05)
