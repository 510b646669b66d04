"""The static ISA audit (binaries/audit.py) given what it needs: the platform's baseline and, for a dispatch
wheel, the CPU variants the pinned ggml declares. Serves ``llama-wheels audit`` and ``build``'s audit stage."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llama_wheels import oracle
from llama_wheels.binaries.audit import WheelAudit, audit_wheel
from llama_wheels.binaries.record import built_as, read_record
from llama_wheels.binaries.wheel import cpu_variants, wheel_name
from llama_wheels.config import Config
from llama_wheels.config.platforms import PLATFORMS, Platform, platform
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import ConfigError, UserError
from llama_wheels.judges.matrix import WheelBuild
from llama_wheels.oracle import VariantBuild
from llama_wheels.pipeline import prepare_pin


def pinned_variants(wheel: Path, config: Config, cache: Cache) -> dict[str, frozenset[str]]:
    """The CPU variants ``wheel``'s pin's ggml declares for its platform, with their features."""
    return {name: build.features for name, build in pinned_builds(wheel, config, cache).items()}


def pinned_builds(wheel: Path, config: Config, cache: Cache) -> dict[str, VariantBuild]:
    """The CPU variants ``wheel``'s pin's ggml declares for its platform, with their features and ``-march``:
    the pin its provenance record names (several pins may build one version, with other patch series), else
    the pin of its llama-cpp-python version."""
    version = WheelBuild.read(wheel).version
    record = read_record(wheel)
    named = record.pin.name if record is not None else None
    pins = [p for p in config.pins.values() if p.name == named and p.version == version] or \
        [p for p in config.pins.values() if p.version == version]
    if not pins:
        raise ConfigError(f"{wheel.name}: no pin in build_config/pins.toml builds llama-cpp-python {version}")
    source = prepare_pin(pins[0], config, cache)
    return declared_builds(source.tree, wheel_platform(wheel))


def ggml_cmake(source_tree: Path) -> str:
    """The pinned ggml's ``ggml/src/CMakeLists.txt``, where its CPU variants are declared with their ``-march``
    (which the wheel's record does not hold: the audit of a dispatch wheel reads its pin's source)."""
    return (source_tree / "vendor/llama.cpp/ggml/src/CMakeLists.txt").read_text()


def declared_builds(source_tree: Path, target: Platform) -> dict[str, VariantBuild]:
    """The ARM CPU variants the pinned ggml in ``source_tree`` declares for ``target``'s system."""
    try:
        return oracle.declared_arm_builds(ggml_cmake(source_tree), target.cmake_system_name)
    except oracle.OracleError as exc:
        raise UserError(f"{source_tree}: {exc}") from None


def wheel_platform(wheel: Path) -> Platform:
    """The platform (config/platforms.py) whose wheel tag ``wheel``'s name carries."""
    name = wheel_name(wheel)
    found = [platform(p) for p in PLATFORMS if platform(p).wheel_platform in name.platforms]
    if not found:
        raise UserError(f"{wheel.name}: platform {', '.join(sorted(name.platforms))} has no ISA baseline in "
                        "config/platforms.py; the audit reads linux-aarch64 and macos-arm64 wheels")
    return found[0]


def audit(wheel: Path, config: Config, cache: Cache) -> WheelAudit:
    """Audit ``wheel``; a dispatch wheel's variants come from its pin's prepared source (fetched if need be)."""
    return _audit(wheel, wheel_platform(wheel), lambda: pinned_builds(wheel, config, cache))


def _audit(wheel: Path, target: Platform, declared: Callable[[], dict[str, VariantBuild]]) -> WheelAudit:
    """Audit ``wheel`` of ``target`` (which has an ISA baseline); ``declared`` is asked only for a dispatch wheel."""
    if target.isa_baseline is None:
        raise UserError(f"{wheel.name}: {target.name} has no ISA baseline; the audit reads AArch64 wheels only")
    with zipfile.ZipFile(wheel) as archive:
        dispatch = bool(cpu_variants(archive.namelist()))
    record = read_record(wheel)
    return audit_wheel(wheel, baseline=target.isa_baseline, variants=declared() if dispatch else None,
                       recorded_isa=built_as(record).fixed_isa if record is not None else None)


@dataclass(frozen=True)
class IsaAuditor:
    """``build``'s audit stage (``pipeline.Auditor``): the finished wheel against its pinned source."""

    def audit(self, wheel: Path, source_tree: Path, platform_name: str) -> str:
        target = platform(platform_name)
        if target.isa_baseline is None:
            return f"skipped: {platform_name} code is not AArch64"
        report = _audit(wheel, target, lambda: declared_builds(source_tree, target))
        report.check()
        features = sorted({f for lib in report.libraries for f, _ in lib.features})
        return (f"{report.wheel}: {len(report.libraries)} libraries within their ISA (uses {', '.join(features)} "
                f"where allowed), {report.seconds:.1f}s")
