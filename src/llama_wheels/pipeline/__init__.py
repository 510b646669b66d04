"""The stages chained: fetch -> prepare -> build -> repair -> finalize -> verify -> audit -> dist/.

Each stage is its own module and can be called alone; this module only sequences them per job,
reports progress, and publishes the finished wheels of every job into dist/ together as the very last
step (all or none: ``cache.publish_files``), so an error or Ctrl-C anywhere, in any job, leaves dist/ as
it was. A finished wheel whose inputs (its provenance
record) did not change comes from the finished-wheel cache (store.py) instead of build..finalize.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from llama_wheels.binaries.elf import WheelFacts
from llama_wheels.binaries.record import Record, ToolchainRecord, read_record
from llama_wheels.config import Config, Pin
from llama_wheels.config.platforms import Platform, platform
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache, publish_files
from llama_wheels.core.errors import ConfigError, UserError
from llama_wheels.core.runner import current_log, require_tool
from llama_wheels.pipeline.store import Entry, WheelStore
from llama_wheels.plan import BuildJob, plan
from llama_wheels.stages.build import BuildSettings, build_settings, build_wheel, sdk_build_settings
from llama_wheels.stages.fetch import cached_sdist, fetch_sdist
from llama_wheels.stages.finalize import finalize_wheel
from llama_wheels.stages.patching import PreparedSource, patch_files, prepare
from llama_wheels.stages.provenance import collect
from llama_wheels.stages.repair import check_wheel, repair_wheel, require_patchelf
from llama_wheels.stages.toolchain import Toolchain, sdk_switches_on, zig_toolchain


class Verifier(Protocol):
    """The verify stage: proves a finished wheel on some machine before it reaches dist/.

    The pipeline does not know how (the emulated test bed is a layer above it: ``judges.verify``); it
    asks before compiling whether the verifier can run (``preflight``), and skips wheels of platforms the
    verifier has no machine for.
    """

    @property
    def platforms(self) -> tuple[str, ...]:
        """The platforms whose wheels it can run."""
        ...

    @property
    def where(self) -> str:
        """What it runs on and judges by, as the finished-wheel store records it (e.g. the emulated CPU's
        name and the rules' version): a wheel passed under another ``where`` is verified again."""
        ...

    def preflight(self) -> None: ...

    def verify(self, wheel: Path, source_tree: Path) -> str:
        """Raise VerifyError unless ``wheel`` (built from the prepared ``source_tree``) passes; return the
        one-line summary of what it showed."""
        ...


class Auditor(Protocol):
    """The audit stage: a static check of a finished wheel's code (``judges.isa_audit.IsaAuditor``: every
    instruction within its library's ISA), run on every wheel before it reaches dist/, cached or not."""

    def audit(self, wheel: Path, source_tree: Path, platform_name: str) -> str:
        """Raise (VerifyError) unless ``wheel``, built from ``source_tree``, passes; return its summary line."""
        ...


@dataclass(frozen=True, kw_only=True)
class Built:
    job: BuildJob
    wheel: Path
    facts: WheelFacts
    seconds: float
    cache_hit: bool = False


def preflight(jobs: Sequence[BuildJob], *, verifier: Verifier | None) -> None:
    """Every tool the run will need, checked before minutes of work are spent."""
    require_tool("git", "it applies the patch series: apt-get install git")
    runner.find_zig()
    if any(platform(job.platform).cmake_system_name == "Linux" for job in jobs):
        require_patchelf()
    if verifier is not None:
        verifier.preflight()


def check_distinct_outputs(jobs: Sequence[BuildJob], dist: Path) -> None:
    """Refuse a run that would make two targets' wheels share one file in ``dist``.

    A wheel's file name is project, version, ``py3-none`` and the platform tag, so targets of one
    platform (dispatch vs fixed ISA) share it: publishing both into one directory would silently keep
    only the last. Checked against the other jobs of the run and against the wheels already in ``dist``
    (their provenance names their target), before anything is compiled.
    """
    owners: dict[tuple[str, str], tuple[str, str]] = {}  # (version, platform) -> (build, where)
    for wheel in sorted(dist.glob("*.whl")) if dist.is_dir() else ():
        try:
            record = read_record(wheel)
        except UserError:
            continue
        if record is not None:
            owners[(record.pin.llama_cpp_python, record.target.platform)] = (record.job_name, f" (already in {wheel})")
    for job in jobs:
        build, where = owners.setdefault((job.pin.version, job.platform), (job.name, ""))
        if build != job.name:
            raise UserError(f"{build}{where} and {job.name} make llama-cpp-python {job.pin.version} wheels "
                            f"for {job.platform} with the same file name; give each its own --dist")


def prepare_job(job: BuildJob, config: Config, cache: Cache) -> PreparedSource:
    source = prepare_pin(job.pin, config, cache, label=job.name)
    job.check_against(source.cmake_options)
    return source


def prepare_pin(pin: Pin, config: Config, cache: Cache, *, label: str | None = None) -> PreparedSource:
    """``pin``'s sdist, fetched (sha256-checked, cached) and prepared (patched, cached by content)."""
    log = current_log()
    with log.stage("fetch", label or pin.name):
        sdist = fetch_sdist(pin, cache)
    with log.stage("prepare", label or pin.name):
        return prepare(pin, sdist, config.patches_dir, cache)


def _verify(entry: Entry, key: str, source: PreparedSource, verifier: Verifier, cache: Cache) -> None:
    log = current_log()
    if verifier.where in entry.verified_on:
        log.progress(f"verify   {entry.wheel.name} already passed on {verifier.where} (cached)")
        return
    with log.stage("verify", f"{entry.wheel.name} on {verifier.where}"):
        summary = verifier.verify(entry.wheel, source.tree)
    log.progress(f"verify   {summary}")
    WheelStore(cache).mark_verified(key, entry, verifier.where)


def finished_wheel(job: BuildJob, source: PreparedSource, toolchain: Toolchain, target_platform: Platform,
                   config: Config, cache: Cache) -> tuple[Entry, str, bool]:
    """``job``'s repaired, finalized wheel from the finished-wheel cache, else built now and stored.

    Returns the cache entry, its key and whether it was a cache hit.
    """
    log = current_log()
    record = collect(job, source, toolchain, cache, sdist=cached_sdist(job.pin, cache),
                     patches=patch_files(job.pin, config.patches_dir))
    store = WheelStore(cache)
    entry = store.lookup(record.key)
    if entry is not None:
        log.progress(f"cache    hit: {job.name} inputs unchanged (key {record.key[:16]}), "
                     f"reusing {entry.wheel.name}")
        return entry, record.key, True
    log.progress(f"cache    miss: {job.name} (key {record.key[:16]}), building")
    with log.stage("build", f"{job.name} ({toolchain.describe()})"), \
            build_wheel(job, source, toolchain, cache, source_date_epoch=record.build.source_date_epoch) as wheel, \
            finish_wheel(wheel, record, target_platform) as final:
        entry = store.put(record.key, final)
    return entry, record.key, False


def ci_settings(job: BuildJob, package: Path, build: Path, cache: Cache) -> BuildSettings:
    """What CI's build of ``job`` from the prepared tree ``package`` into ``build`` gets: exactly what a local
    build passes (``build.build_settings``); a job that needs the platform SDK gets the same definitions and
    flags for the runner's own compiler (``build.sdk_build_settings``)."""
    source = PreparedSource.load(package)
    job.check_against(source.cmake_options)
    if sdk_switches_on(job):
        return sdk_build_settings(job, source, build)
    return build_settings(job, source, zig_toolchain(platform(job.platform), cache), build)


def ci_record(job: BuildJob, config: Config, cache: Cache, package: Path, build: Path) -> Record:
    """The record of the wheel CI built for ``job`` from the prepared tree ``package`` into ``build``: the one a
    local build writes (``provenance.collect``), with the settings CI's build got (``ci_settings``). A job
    compiled by the runner's own compiler records that compiler instead of zig."""
    sdist = cached_sdist(job.pin, cache)
    if not sdist.is_file():
        raise ConfigError(f"{sdist} is missing: run `llama-wheels ci prepare {job.target.name}` first, with "
                          "the same LLAMA_WHEELS_CACHE")
    record = collect(job, PreparedSource.load(package), zig_toolchain(platform(job.platform), cache), cache,
                     sdist=sdist, patches=patch_files(job.pin, config.patches_dir),
                     settings=ci_settings(job, package, build, cache))
    if not sdk_switches_on(job):
        return record
    compiler = runner.run(["cc", "--version"], capture=True).strip().splitlines()[0]
    versions = {**record.toolchain.versions, "zig": "not used", "compiler": compiler}
    return replace(record, toolchain=ToolchainRecord(zig_target=None, identity=compiler, versions=versions))


@contextmanager
def finish_wheel(wheel: Path, record: Record, target_platform: Platform) -> Iterator[Path]:
    """Repair the built ``wheel``, finalize it with its provenance ``record`` and check it; yields the
    finished wheel in a temp directory that is removed afterwards.

    The end of every build: a local one (``finished_wheel``) and CI's repair hook (``ci.hooks``).
    """
    log = current_log()
    with log.stage("repair", record.job_name), repair_wheel(wheel, target_platform) as repaired, \
            log.stage("finalize", record.job_name), \
            tempfile.TemporaryDirectory(prefix="llama-wheels-final-") as tmp:
        final = finalize_wheel(repaired, record, Path(tmp))
        check_wheel(final, target_platform)
        yield final


def build_targets(
    config: Config,
    targets: Sequence[str],
    pin: str | None,
    *,
    dist: Path,
    cache: Cache,
    verifier: Verifier | None = None,
    auditor: Auditor | None = None,
) -> list[Built]:
    log = current_log()
    jobs = plan(config, targets, pin)
    check_distinct_outputs(jobs, dist)
    preflight(jobs, verifier=verifier)
    # Check every job against its pinned source before compiling anything.
    sources = {job.name: prepare_job(job, config, cache) for job in jobs}
    finished: list[tuple[BuildJob, Entry, WheelFacts, float, bool]] = []
    for job in jobs:
        started = log.elapsed
        target_platform = platform(job.platform)
        toolchain = zig_toolchain(target_platform, cache)
        entry, key, hit = finished_wheel(job, sources[job.name], toolchain, target_platform, config, cache)
        if verifier is not None and job.platform in verifier.platforms:
            _verify(entry, key, sources[job.name], verifier, cache)
        elif verifier is not None:
            log.progress(f"verify   skipped: {job.platform} wheels have no emulated test bed ({verifier.where} "
                         f"runs {', '.join(verifier.platforms)}); the static checks and the ISA audit still run")
        if auditor is not None:
            with log.stage("audit", entry.wheel.name):
                log.progress(f"audit    {auditor.audit(entry.wheel, sources[job.name].tree, job.platform)}")
        facts = check_wheel(entry.wheel, target_platform)
        finished.append((job, entry, facts, log.elapsed - started, hit))
    # All or nothing: every wheel of the run reaches dist/ together, once each has passed every stage.
    finals = publish_files([entry.wheel for _, entry, _, _, _ in finished], dist)
    built = []
    for (job, entry, facts, seconds, hit), final in zip(finished, finals, strict=True):
        log.progress(f"wrote    {final} ({facts.size / 1e6:.1f} MB, sha256 {entry.sha256})")
        built.append(Built(job=job, wheel=final, facts=facts, seconds=seconds, cache_hit=hit))
    return built
