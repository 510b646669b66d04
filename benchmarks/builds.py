"""Build times of the default target: cold, warm (ccache only), no-op; and the emulated matrix per wheel.

Opt-in (``run.py --builds``): a cold build compiles everything (~11 min on 2 cores). It runs the CLI exactly
as a user would, in a separate cache root (``LLAMA_WHEELS_CACHE``, so its own ccache, zig cache, build
trees and finished-wheel cache), seeded only with the pinned sdist so no download is timed:

- cold:  empty caches: prepare, configure, compile everything, repair, finalize;
- warm:  the CMake build trees and finished wheels removed, ccache and zig's cache kept: what a fresh
         build directory (a new clone, ``llama-wheels clean``) costs when the compiler cache is warm;
- no-op: the same command again: the finished-wheel cache answers (inputs unchanged).

Then ``llama-wheels test WHEEL`` (every emulated CPU, with the user's cache for the sysroot) on the wheel
the cold build made. The user's own caches are never touched by the builds.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_wheels.config import Config
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache, remove
from llama_wheels.core.errors import VerifyError
from llama_wheels.stages.fetch import cached_sdist, fetch_sdist

from .stats import summarize


@dataclass(frozen=True, kw_only=True)
class Timed:
    seconds: float
    output: str


def _cli(config: Config, args: list[str], cache_root: Path, log: Path) -> Timed:
    env: dict[str, str | None] = {
        "LLAMA_WHEELS_CACHE": str(cache_root),
        "PYTHONPATH": str(config.root / "src"),
    }
    started = time.monotonic()
    out = runner.run(
        [sys.executable, "-m", "llama_wheels", "--log", str(log), *args],
        env=env,
        cwd=config.root,
        capture=True,
    )
    return Timed(seconds=time.monotonic() - started, output=out)


def _ccache_stats(ccache_dir: Path) -> dict[str, int]:
    out = runner.run(["ccache", "--print-stats"], env={"CCACHE_DIR": str(ccache_dir)}, capture=True)
    stats = {}
    for line in out.splitlines():
        key, _, value = line.partition("\t")
        if value.strip().isdigit():
            stats[key] = int(value)
    keep = ("direct_cache_hit", "preprocessed_cache_hit", "cache_miss")
    return {k: stats.get(k, 0) for k in keep}


def seed_sdist(config: Config, user_cache: Cache, bench_cache: Cache) -> None:
    """Put the pinned sdist into ``bench_cache`` (a hard link when possible) so no download is timed."""
    pin = config.pin(None)
    source = fetch_sdist(pin, user_cache)
    dest = cached_sdist(pin, bench_cache)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        try:
            os.link(source, dest)
        except OSError:
            shutil.copy2(source, dest)


def run_builds(
    config: Config, user_cache: Cache, bench_root: Path, scratch: Path, *, reps: int
) -> dict[str, Any]:
    """Time cold / warm / no-op builds of the default target in ``bench_root`` and the matrix on its wheel."""
    log = runner.current_log()
    target = config.default_target
    if bench_root.exists():
        remove(bench_root)
    bench = Cache(bench_root)
    seed_sdist(config, user_cache, bench)
    dist = scratch / "build-dist"
    build = ["build", target, "--no-verify", "--dist", str(dist)]
    with log.stage("build", f"{target} cold (empty cache {bench_root})"):
        cold = _cli(config, build, bench_root, scratch / "build-cold.log")
    if "cache    miss" not in cold.output:
        raise VerifyError(f"the cold build of {target} did not build (log {scratch / 'build-cold.log'})")
    warm: list[float] = []
    stats: dict[str, int] = {}
    for i in range(1, reps + 1):
        remove(bench_root / "build")
        remove(bench_root / "wheels")
        runner.run(["ccache", "--zero-stats"], env={"CCACHE_DIR": str(bench.ccache)})
        with log.stage("build", f"{target} warm {i}/{reps} (fresh build tree, warm ccache)"):
            timed = _cli(config, build, bench_root, scratch / f"build-warm-{i}.log")
        if "cache    miss" not in timed.output:
            raise VerifyError(
                f"the warm build of {target} came from the finished-wheel cache; it must compile"
            )
        warm.append(timed.seconds)
        stats = _ccache_stats(bench.ccache)
    noop: list[float] = []
    for i in range(1, reps + 1):
        with log.stage("build", f"{target} no-op {i}/{reps} (inputs unchanged)"):
            timed = _cli(config, build, bench_root, scratch / f"build-noop-{i}.log")
        if "cache    hit" not in timed.output:
            raise VerifyError(f"the no-op build of {target} was not a finished-wheel cache hit")
        noop.append(timed.seconds)
    [wheel] = dist.glob("*.whl")
    with log.stage("matrix", f"llama-wheels test {wheel.name} (every emulated CPU)"):
        started = time.monotonic()
        outcome = runner.probe(
            [
                sys.executable,
                "-m",
                "llama_wheels",
                "--log",
                str(scratch / "matrix.log"),
                "test",
                str(wheel),
                "--out",
                str(scratch / "matrix"),
            ],
            env={"PYTHONPATH": str(config.root / "src"), "LLAMA_WHEELS_CACHE": str(user_cache.root)},
            cwd=config.root,
        )
        matrix_seconds = time.monotonic() - started
    warm_summary, noop_summary = summarize(warm), summarize(noop)
    return {
        "target": target,
        "cold_seconds": round(cold.seconds, 1),
        "warm_seconds": warm_summary.to_json(),
        "noop_seconds": noop_summary.to_json(),
        "warm_ccache": stats,
        "warm_over_cold": round(warm_summary.median / cold.seconds, 4),
        "goals": {"warm_over_cold_max": 0.15, "noop_seconds_max": 10.0},
        "met": {"warm": warm_summary.median / cold.seconds <= 0.15, "noop": noop_summary.median < 10.0},
        "matrix": [
            {
                "wheel": wheel.name,
                "target": target,
                "seconds": round(matrix_seconds, 1),
                "passed": outcome.returncode == 0,
            }
        ],
    }
