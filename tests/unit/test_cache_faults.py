"""The cache's and dist/'s writers after a crash and under contention, without a build: what a SIGKILLed run
left half-written is swept by the next run (a live run's is not), and a run that must wait for a lock says so.
The same faults on real builds: tests/integration/builds/test_faults.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from llama_wheels.core import runner
from llama_wheels.core.cache import atomic_path, locked, publish_files
from tests.support.checkout import REPO
from tests.support.processes import interruptible, wait_for

# argv: PATH READY. Stages PATH as the cache's writers do (a locked temp beside it), writes half of it,
# says READY and sleeps until killed.
_HALF_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from llama_wheels.core.cache import atomic_path
    with atomic_path(Path(sys.argv[1])) as tmp:
        tmp.write_bytes(b"half a wheel")
        Path(sys.argv[2]).write_text(str(tmp))
        time.sleep(300)
""")


def half_written(final: Path, ready: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _HALF_WRITER, str(final), str(ready)],
                            env={"PYTHONPATH": str(REPO / "src")}, text=True)


def test_what_a_killed_run_half_wrote_is_swept_and_a_live_runs_is_not(tmp_path: Path) -> None:
    dist, built = tmp_path / "dist", tmp_path / "built"
    built.mkdir()
    (built / "x.whl").write_bytes(b"a whole wheel")
    killed, live = half_written(dist / "x.whl", tmp_path / "killed"), half_written(dist / "x.whl", tmp_path / "live")
    try:
        wait_for(lambda: (tmp_path / "killed").exists() and (tmp_path / "live").exists(), "both writers staging")
        orphan, busy = Path((tmp_path / "killed").read_text()), Path((tmp_path / "live").read_text())
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert orphan.exists(), "SIGKILL leaves the temp behind: the fault this test is about"
        assert publish_files([built / "x.whl"], dist) == [dist / "x.whl"]
        assert (dist / "x.whl").read_bytes() == b"a whole wheel"
        assert not orphan.exists(), "the killed run's half-written temp is still in dist/"
        assert busy.exists(), "a live run's temp was swept under it"
    finally:
        for proc in (killed, live):
            proc.kill()
            proc.wait()
    with atomic_path(dist / "x.whl") as tmp:  # the next writer sweeps the one the second kill left
        tmp.write_bytes(b"again")
    assert sorted(p.name for p in dist.iterdir()) == ["x.whl"]


def test_a_run_that_waits_for_a_lock_says_so(tmp_path: Path) -> None:
    lock, log_path = tmp_path / "build" / "job.lock", tmp_path / "run.log"
    holder = ("import fcntl, sys, time\n"
              "fh = open(sys.argv[1], 'a'); fcntl.flock(fh, fcntl.LOCK_EX)\n"
              "print('held', flush=True); time.sleep(float(sys.argv[2]))\n")
    lock.parent.mkdir()
    log = runner.Log(log_path, quiet=True)
    runner.set_log(log)
    try:
        with interruptible([sys.executable, "-c", holder, lock, "2"], stdout=subprocess.PIPE) as proc:
            assert proc.stdout is not None and proc.stdout.readline() == "held\n"
            started = time.monotonic()
            with locked(lock):
                waited = time.monotonic() - started
            proc.wait(timeout=30)
    finally:
        log.close()
        runner.set_log(runner.Log(None, quiet=True))
    text = log_path.read_text()
    assert f"waiting  for the lock {lock}: another llama-wheels run holds it" in text
    assert f"waiting  for the lock {lock}: got it after" in text
    assert waited > 0.5


def test_a_temp_swept_before_its_run_locked_it_is_made_again(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The window between creating a temp and locking it: another run's sweep sees an unlocked temp and removes
    it. The run must notice and stage a new one, not write on into a name the next sweep takes from under it."""
    from llama_wheels.core import cache as cache_module

    final = tmp_path / "dist" / "x.whl"
    real_open, swept = os.open, []

    def open_after_a_sweep(path: Any, flags: int, *args: Any) -> int:
        if not swept and not flags & os.O_CREAT and Path(path).name.startswith(".x.whl.tmp-"):
            swept.append(Path(path))
            cache_module._sweep_orphans(final)  # another run, between our mkstemp and our flock
        return real_open(path, flags, *args)

    monkeypatch.setattr(cache_module.os, "open", open_after_a_sweep)
    with atomic_path(final) as tmp:
        assert swept and not swept[0].exists(), "the injected sweep did not remove the first temp"
        assert tmp != swept[0]
        tmp.write_bytes(b"whole")
        cache_module._sweep_orphans(final)  # a sweep now must leave the live, locked temp alone
        assert tmp.exists()
    assert final.read_bytes() == b"whole"
