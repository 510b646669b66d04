"""The stages chained: fetch -> prepare -> build -> repair -> verify -> dist/.

Each stage is its own module and can be called alone; this module only sequences them per job,
reports progress, and publishes a finished wheel into dist/ as the very last step (atomically), so
an error or Ctrl-C anywhere leaves dist/ as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .build import build_wheel
from .cache import Cache, publish_file
from .config import Config
from .fetch import fetch_sdist
from .patching import PreparedSource, prepare
from .plan import BuildJob, plan
from .platforms import platform
from .repair import WheelFacts, check_wheel, repair_wheel
from .runner import current_log, require_tool
from .toolchain import find_zig, zig_toolchain


@dataclass(frozen=True, kw_only=True)
class Built:
    job: BuildJob
    wheel: Path
    facts: WheelFacts
    seconds: float


def preflight(*, verify: bool) -> None:
    """Every tool the run will need, checked before minutes of work are spent."""
    require_tool("git", "it applies the patch series: apt-get install git")
    find_zig()
    if verify:
        from .emulation import require_qemu

        require_qemu()


def prepare_job(job: BuildJob, config: Config, cache: Cache) -> PreparedSource:
    log = current_log()
    with log.stage("fetch", job.name):
        sdist = fetch_sdist(job.pin, cache)
    with log.stage("prepare", job.name):
        source = prepare(job.pin, sdist, config.patches_dir, cache)
    job.check_against(source.cmake_options)
    return source


def _verify(wheel: Path, config: Config, cache: Cache) -> None:
    # The emulated bed is only needed (and only built) when verifying.
    from .emulation import load_cpus
    from .verify import SMOKE_CPU, smoke_test

    cpu = load_cpus(config.root)[SMOKE_CPU]
    log = current_log()
    with log.stage("verify", f"{wheel.name} on emulated {cpu.name}"):
        result = smoke_test(wheel, cpu, cache)
    log.progress(f"verify   CPU variant {result.variant}, Q4_0 repack {result.layout}, "
                 f"greedy tokens {list(result.tokens)}")


def build_targets(
    config: Config,
    targets: Sequence[str],
    pin: str | None,
    *,
    dist: Path,
    cache: Cache,
    verify: bool = True,
) -> list[Built]:
    log = current_log()
    jobs = plan(config, targets, pin)
    preflight(verify=verify)
    # Check every job against its pinned source before compiling anything.
    sources = {job.name: prepare_job(job, config, cache) for job in jobs}
    built = []
    for job in jobs:
        started = log.elapsed
        target_platform = platform(job.platform)
        toolchain = zig_toolchain(target_platform, cache)
        with log.stage("build", f"{job.name} ({toolchain.describe()})"), \
                build_wheel(job, sources[job.name], toolchain, cache) as wheel:
            with log.stage("repair", job.name), repair_wheel(wheel, target_platform) as repaired:
                if verify:
                    _verify(repaired, config, cache)
                final = publish_file(repaired, dist)
        facts = check_wheel(final, target_platform)
        log.progress(f"wrote    {final} ({facts.size / 1e6:.1f} MB)")
        built.append(Built(job=job, wheel=final, facts=facts, seconds=log.elapsed - started))
    return built
