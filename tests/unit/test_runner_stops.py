"""An interrupted or timed-out command ends with everything it started, and progress never stalls a build.

The subjects here are the runner as the command line uses it (a child subreaper, see runner.adopt_orphans)
driving a small stand-in for ninja: a head that runs each "compile" in a process group of its own and dies
at once of SIGTERM, leaving its compiles behind, as ninja does when a signal finds it blocked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llama_wheels.core import runner
from llama_wheels.core.errors import CommandTimedOut
from tests.support.checkout import REPO
from tests.support.processes import interruptible, running, wait_for

# argv: PIDFILE COMPILES [DAEMON]. Starts COMPILES sleepers, each in its own process group, and with DAEMON
# also a double-forked sleeper (its parent exits at once: an orphan before any interrupt); writes their pids.
_NINJA = textwrap.dedent("""
    import os, subprocess, sys, time
    pidfile, compiles = sys.argv[1], int(sys.argv[2])
    pids = []
    for i in range(compiles):
        pids.append(subprocess.Popen(["sleep", "300"], process_group=0).pid)
        print(f"[{i + 1}/{compiles + 10}] Building C object obj{i}.o", flush=True)
    if len(sys.argv) > 3:
        orphan = "import subprocess; print(subprocess.Popen(['sleep', '300'], stdout=subprocess.DEVNULL).pid)"
        middle = subprocess.Popen([sys.executable, "-c", orphan], stdout=subprocess.PIPE, text=True)
        pids.append(int(middle.communicate()[0]))
    with open(pidfile + ".tmp", "w") as fh:
        fh.write(" ".join(map(str, pids)))
    os.rename(pidfile + ".tmp", pidfile)
    time.sleep(300)
""")

# The runner as `llama-wheels` drives it (SIGTERM an interrupt like Ctrl-C; a child subreaper):
# argv LOG NINJA PIDFILE COMPILES [DAEMON]; exit 130 when interrupted.
_SUBJECT = textwrap.dedent("""
    import signal, sys
    from pathlib import Path
    from llama_wheels.core import runner
    from llama_wheels.core.errors import Interrupted
    def interrupt(signum, frame):
        raise KeyboardInterrupt  # as the command line does (cli.main)
    signal.signal(signal.SIGTERM, interrupt)
    runner.adopt_orphans()
    runner.set_log(runner.Log(Path(sys.argv[1])))
    try:
        runner.run([sys.executable, *sys.argv[2:]], progress="build    demo")
    except Interrupted as exc:
        print(f"llama-wheels: error: {exc}", file=sys.stderr)
        sys.exit(130)
""")


def compiles(pidfile: Path) -> list[int]:
    return [int(pid) for pid in pidfile.read_text().split()]


@pytest.fixture
def scripts(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "ninja.py").write_text(_NINJA)
    (tmp_path / "subject.py").write_text(_SUBJECT)
    return tmp_path / "ninja.py", tmp_path / "subject.py"


def subject_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupt_ends_every_process_of_the_work_before_returning(tmp_path: Path, scripts: tuple[Path, Path],
                                                                      sig: signal.Signals) -> None:
    """Compiles in process groups of their own and an orphan adopted before the interrupt: when the
    interrupted run has returned, none of them runs any more."""
    ninja, subject = scripts
    pidfile = tmp_path / "pids"
    with interruptible([sys.executable, subject, tmp_path / "log", ninja, pidfile, "3", "daemon"],
                       stderr=subprocess.PIPE, env=subject_env()) as proc:
        wait_for(pidfile.exists, "compiles started", proc=proc)
        pids = compiles(pidfile)
        assert all(running(pid) for pid in pids)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        still = [pid for pid in pids if running(pid)]
    assert proc.returncode == 130, stderr
    assert not still, f"processes of the interrupted work outlived it: {still}"
    assert stderr.strip().splitlines()[-1] == f"llama-wheels: error: interrupted while running {sys.executable}; " \
                                              "nothing was published"


def test_a_timeout_ends_the_compiles_in_their_own_process_groups(tmp_path: Path, scripts: tuple[Path, Path]) -> None:
    """The timeout's group kill reaches the head; the compiles it started in groups of their own end too,
    before the timeout is reported."""
    ninja, _ = scripts
    pidfile = tmp_path / "pids"
    with pytest.raises(CommandTimedOut, match="timed out after 3s"):
        runner.probe([sys.executable, ninja, pidfile, "3"], timeout=3)
    pids = compiles(pidfile)
    assert len(pids) == 3
    assert not [pid for pid in pids if running(pid)], "a compile outlived its timed-out command"


_CHATTY = textwrap.dedent("""
    import sys
    from pathlib import Path
    from llama_wheels.core import runner
    runner.PROGRESS_EVERY = 0  # every ninja step is a console line: far more than a pipe holds
    log = runner.Log(Path(sys.argv[1]))
    runner.set_log(log)
    script = "for i in range(1, 20001): print(f'[{i}/20000] Building CXX object obj{i}.o')"
    runner.run([sys.executable, "-c", script], progress="build    demo")
    log.close()
    Path(sys.argv[2]).write_text("done")
""")


@pytest.mark.parametrize("stderr_is", ["full", "closed"])
def test_progress_on_a_stderr_nobody_reads_never_stalls_the_build(tmp_path: Path, stderr_is: str) -> None:
    """20000 progress lines into a stderr pipe nobody reads (it fills at 64 KiB) or whose reader has gone
    (EPIPE): the command's output is still drained to its end and the run finishes, the log complete."""
    (tmp_path / "chatty.py").write_text(_CHATTY)
    done = tmp_path / "done"
    with interruptible([sys.executable, tmp_path / "chatty.py", tmp_path / "log", done],
                       stderr=subprocess.PIPE, env=subject_env()) as proc:
        assert proc.stderr is not None
        if stderr_is == "closed":
            proc.stderr.close()
        wait_for(done.exists, "end of the build (it stalled on its progress output)", timeout=120, proc=proc)
    assert "[20000/20000] Building CXX object obj20000.o" in (tmp_path / "log").read_text()


def test_the_interrupt_tests_hold_when_the_suite_starts_with_sigint_ignored(tmp_path: Path) -> None:
    """A background job of a non-interactive shell (`nohup ... &`, a CI wrapper) starts with SIGINT ignored,
    and every process it starts inherits that: the interrupt tests must give their subject a deliverable
    SIGINT themselves."""
    here = Path(__file__).resolve().relative_to(REPO)
    result = subprocess.run(
        ["sh", "-c", 'trap "" INT; exec "$@"', "sh", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--noconftest", f"{here}::test_an_interrupt_ends_every_process_of_the_work_before_returning"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 passed" in result.stdout
