"""Faults on real builds: SIGKILL at each stage, full file systems, two builds at once.

About ten builds of the legacy pin's fixed-ISA target (the smallest the suite makes: 45 compile steps), all but
the first ccache-warm: 5 min 42 s for the four tests, 3 min of it zig's first libc++ for that CPU. The unit tier
keeps the cheap fault cases (tests/unit/test_cache_faults.py, tests/unit/test_runner_stops.py).

Each run uses a cache root of this module's own that shares only the downloads and the compiler cache with the
real one (conftest's cache_root_sharing), so the builds are ccache-warm rebuilds: minutes, not a cold compile.
Every test fails when it cannot provoke its fault (a kill that came too late, a lock nobody waited for).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llama_wheels.core.cache import Cache
from tests.support.checkout import REPO, cache_root_sharing, cli
from tests.support.faults import (
    CreationWatch,
    dist_is_sound,
    resize,
    store_entries_are_sound,
    tmpfs,
)
from tests.support.processes import interruptible, kill_tree, wait_for

SHARED = ("sdists", "zig", "ccache")


@pytest.fixture(scope="module")
def private_root(tmp_path_factory: pytest.TempPathFactory, cache: Cache) -> Path:
    return cache_root_sharing(tmp_path_factory.mktemp("faults") / "cache", cache, SHARED)


# The smallest real build the suite makes anyway (the legacy pin's fixed-ISA wheel: 45 compile steps, the
# default target has 393), so every fault's rebuild is a ccache-warm minute.
TARGET = ("linux-aarch64-armv8.2-dotprod", "--pin", "legacy")


def build_argv(log: Path, dist: Path) -> list[str | os.PathLike[str]]:
    return [sys.executable, "-m", "llama_wheels", "--log", log, "build", *TARGET, "--no-verify", "--dist", dist]


def env_for(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "LLAMA_WHEELS_CACHE": str(root)}


def log_has(log: Path, pattern: str) -> Callable[[], bool]:
    return lambda: log.exists() and re.search(pattern, log.read_text(errors="replace"), re.MULTILINE) is not None


# Where a stage has begun, in the build log: ninja's third step; the repair, finalize and audit stages.
COMPILING = r"^\[3/\d+\] "
REPAIRING = r"^==== \[ *[\d.]+s\] repair   "
AUDITING = r"^==== \[ *[\d.]+s\] audit    \S+ \.\.\.$"


def test_a_build_killed_at_each_stage_builds_again_and_leaves_nothing_corrupt(private_root: Path,
                                                                               tmp_path: Path) -> None:
    """SIGKILL to the whole process tree (an OOM kill, a cancelled runner, a power cut) while it compiles,
    repairs, audits and publishes to dist/; after each, every cache entry and every file in dist/ is whole,
    and the next run picks up and finally succeeds, leaving no temp behind."""
    dist = tmp_path / "dist"
    env = env_for(private_root)
    for run, (stage, reached, not_yet) in enumerate([("compile", COMPILING, REPAIRING),
                                                     ("repair", REPAIRING, AUDITING),
                                                     ("audit", AUDITING, r"^==== .* wrote ")]):
        log = tmp_path / f"{run}-{stage}.log"
        with interruptible(build_argv(log, dist), cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=env) as proc:
            wait_for(log_has(log, reached), f"the {stage} stage (log {log})", timeout=1800, proc=proc)
            kill_tree(proc)
        assert not log_has(log, not_yet)(), f"killed too late: the run had gone past {stage} (log {log})"
        store_entries_are_sound(private_root)
        assert dist_is_sound(dist) == [], "a wheel reached dist/ from a killed run"

    # publish: freeze the run the moment its temp appears in dist/, before the rename, then kill it
    log = tmp_path / "3-publish.log"
    with interruptible(build_argv(log, dist), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=env) as proc:
        watch = CreationWatch(dist, lambda name: ".whl.tmp-" in name,
                              lambda name: os.kill(proc.pid, signal.SIGSTOP))
        try:
            wait_for(lambda: bool(watch.seen), f"the publish to dist/ (log {log})", timeout=1800, proc=proc)
            staged = [p.name for p in dist.iterdir()]
            kill_tree(proc)
        finally:
            watch.close()
    assert [name for name in staged if not name.startswith(".")] == [], \
        f"killed too late: the wheel was already renamed into dist/ ({staged})"
    assert any(".whl.tmp-" in name for name in os.listdir(dist)), "the half-published temp is the fault here"
    store_entries_are_sound(private_root)

    final = cli("--log", str(tmp_path / "4-final.log"), "build", *TARGET, "--no-verify", "--dist", str(dist),
                env=env)
    assert final.returncode == 0, final.stderr[-3000:]
    [wheel] = dist_is_sound(dist)  # the killed run's temp is gone too
    [stored] = store_entries_are_sound(private_root)
    assert wheel == stored


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("llama-wheels: error")]


def test_dist_on_a_full_file_system_is_one_line_and_nothing_half_written(private_root: Path,
                                                                          tmp_path: Path) -> None:
    env = env_for(private_root)
    with tmpfs(tmp_path / "dist", "1m") as dist:
        full = cli("--log", str(tmp_path / "full.log"), "build", *TARGET, "--no-verify", "--dist", str(dist),
                   env=env)
        assert full.returncode == 1, full.stderr[-3000:]
        [line] = error_lines(full.stderr)
        assert full.stderr.strip().splitlines()[-1] == line
        assert str(dist) in line and "No space left on device (ENOSPC)" in line and "free space there" in line
        assert os.listdir(dist) == [], "a half-written file is left in dist/"
        resize(dist, "256m")
        again = cli("--log", str(tmp_path / "again.log"), "build", *TARGET, "--no-verify", "--dist", str(dist),
                    env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert len(dist_is_sound(dist)) == 1


def test_a_cache_on_a_full_file_system_is_one_line_and_nothing_half_written(cache: Cache, tmp_path: Path) -> None:
    """The cache's own parts (prepared sources, build trees, finished wheels) on a 64 MB file system: the
    prepared source does not fit. One line; no half-prepared tree, no entry; the next run with room builds."""
    dist = tmp_path / "dist"
    with tmpfs(tmp_path / "cache", "64m") as root:
        for part in SHARED:
            (root / part).symlink_to(cache.dir(part))
        env = env_for(root)
        full = cli("--log", str(tmp_path / "full.log"), "build", *TARGET, "--no-verify", "--dist", str(dist),
                   env=env)
        assert full.returncode == 1, full.stderr[-3000:]
        [line] = error_lines(full.stderr)
        assert full.stderr.strip().splitlines()[-1] == line
        assert "No space left on device" in line and "free space there" in line, line
        for part in (p for p in root.iterdir() if p.name not in SHARED):
            assert not [entry for entry in part.rglob("*.tmp-*")], f"half-written in {part}"
        store_entries_are_sound(root)
        assert not dist.exists() or dist_is_sound(dist) == []
        resize(root, "3g")
        again = cli("--log", str(tmp_path / "again.log"), "build", *TARGET, "--no-verify", "--dist", str(dist),
                    env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert len(dist_is_sound(dist)) == 1
        store_entries_are_sound(root)


def test_two_builds_of_one_target_at_once_both_end_well(cache: Cache, tmp_path: Path) -> None:
    """The second waits for the first's build tree and says so; both publish the same wheel."""
    root = cache_root_sharing(tmp_path / "cache", cache, SHARED)
    env = env_for(root)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with interruptible(build_argv(first_log, tmp_path / "first"), cwd=REPO, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, env=env) as first:
        wait_for(log_has(first_log, r"^==== .*cache    miss"), f"the first build starting (log {first_log})",
                 timeout=1800, proc=first)
        started = time.monotonic()
        with interruptible(build_argv(second_log, tmp_path / "second"), cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, env=env) as second:
            _, second_err = second.communicate(timeout=3600)
            _, first_err = first.communicate(timeout=3600)
    assert first.returncode == 0, first_err[-3000:]
    assert second.returncode == 0, second_err[-3000:]
    # (the lock it meets first is the pinned source's, held shared by the first build until it has finished)
    assert re.search(r"waiting  for the lock \S+: another llama-wheels run holds it", second_err), \
        f"the second build did not wait for the first (it ran {time.monotonic() - started:.0f}s; log {second_log})"
    [a], [b] = dist_is_sound(tmp_path / "first"), dist_is_sound(tmp_path / "second")
    assert (tmp_path / "first" / a).read_bytes() == (tmp_path / "second" / b).read_bytes()
