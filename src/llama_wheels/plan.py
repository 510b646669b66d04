"""``plan``: the pure function from configuration to build jobs.

Everything that decides *what* is built lives here: which pin, which patches, which CMake
variables and compiler flags follow from a target's logical switches at that pin's revision.
Stages decide *how*, and never read configuration files themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from llama_wheels.config import Config, Pin, Target
from llama_wheels.core.cache import hash_key
from llama_wheels.core.errors import ConfigError

# Always set, whatever the target: the Python package is built by scikit-build-core, not llama.cpp's
# own example/test/server programs, and no library from the build machine may be found.
COMMON_DEFINES: tuple[tuple[str, str], ...] = (("CMAKE_BUILD_TYPE", "Release"),)


@dataclass(frozen=True, kw_only=True)
class BuildJob:
    pin: Pin
    target: Target
    defines: tuple[tuple[str, str], ...]
    compiler_flags: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.target.name}@{self.pin.name}"

    @property
    def platform(self) -> str:
        return self.target.platform

    def cmake_args(self) -> list[str]:
        args = [f"-D{name}={value}" for name, value in self.defines]
        if self.compiler_flags:
            flags = " ".join(self.compiler_flags)
            args += [f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}"]
        return args

    @property
    def key(self) -> str:
        """Content key of what this job asks for (the toolchain adds its own identity when building)."""
        return hash_key([self.pin.sdist_sha256, *self.pin.patches, self.platform, *self.cmake_args()])

    def check_against(self, declared: frozenset[str]) -> None:
        """Every CMake variable set must be declared by the pinned source (option()/CACHE)."""
        for name, _ in self.defines:
            if name.startswith("CMAKE_"):
                continue
            if name not in declared:
                raise ConfigError(
                    f"{self.name}: CMake option {name} is not defined by llama-cpp-python "
                    f"{self.pin.version} (llama.cpp {self.pin.llama_cpp_commit}); CMake would ignore it. "
                    f"Fix pins.{self.pin.name}.switches in build_config/pins.toml or the target in "
                    "build_config/targets.toml"
                )


def _resolve(pin: Pin, target: Target) -> tuple[list[tuple[str, str]], list[str]]:
    defines: list[tuple[str, str]] = list(COMMON_DEFINES)
    flags: list[str] = []
    for switch, value in target.switches.items():
        if switch not in pin.switches:
            raise ConfigError(
                f"target {target.name} sets switch {switch!r}, but pins.{pin.name}.switches does not say "
                f"what it means for llama-cpp-python {pin.version}; add it to build_config/pins.toml"
            )
        mapping = pin.switches[switch]
        if mapping is False:
            if value in (False, ""):
                continue  # asked off, and the revision does not have it at all
            raise ConfigError(
                f"target {target.name} needs switch {switch!r}, which build_config/pins.toml says llama-cpp-python "
                f"{pin.version} (pins.{pin.name}.switches.{switch} = false) does not have; build it with another pin"
            )
        assert isinstance(mapping, str)
        if mapping.startswith("-"):
            if not isinstance(value, str) or not value:
                raise ConfigError(f"build_config/targets.toml: targets.{target.name}.switches.{switch}: "
                                  f"pins.{pin.name} maps it to the compiler flag {mapping!r}, which needs a string")
            flags.append(mapping.replace("{}", value))
        elif isinstance(value, bool):
            defines.append((mapping, "ON" if value else "OFF"))
        else:
            defines.append((mapping, value))
    return defines, flags


def plan(config: Config, targets: Sequence[str] = (), pin: str | None = None) -> list[BuildJob]:
    """The jobs that build ``targets`` at ``pin`` (default: the default pin). No target named: the pin's own
    ``targets``, else the default target."""
    chosen_pin = config.pin(pin)
    jobs = []
    for name in targets or chosen_pin.targets or [config.default_target]:
        target = config.target(name)
        defines, flags = _resolve(chosen_pin, target)
        jobs.append(BuildJob(pin=chosen_pin, target=target, defines=tuple(defines), compiler_flags=tuple(flags)))
    return jobs


def can_build(pin: Pin, target: Target) -> bool:
    """Whether ``pin``'s revision has every switch ``target`` turns on (``plan`` would not refuse it)."""
    try:
        _resolve(pin, target)
    except ConfigError:
        return False
    return True


def published_jobs(config: Config) -> list[BuildJob]:
    """What CI builds and a release publishes: every published pin x every published target it can build.

    Pins with ``publish = true`` are released side by side (each its own llama-cpp-python version in the
    same indexes); a target is built at each such pin whose revision has the switches it needs (the
    0.3.4 pin has no CPU variant dispatch and no Apple switches: its fixed-ISA Linux targets only). A
    published pin that can build no published target is a configuration error, not an empty release.
    """
    pins = sorted(name for name, p in config.pins.items() if p.publish)
    if not pins:
        raise ConfigError("no pin has publish = true in build_config/pins.toml: nothing would be released; "
                          f"set it on pins.{config.default_pin}")
    targets = sorted(name for name, t in config.targets.items() if t.publish)
    jobs = []
    for name in pins:
        buildable = [t for t in targets if can_build(config.pins[name], config.targets[t])]
        if not buildable:
            raise ConfigError(f"pins.{name} has publish = true but can build none of the published targets "
                              f"({', '.join(targets)}); set publish = false or fix its switches")
        jobs += plan(config, buildable, name)
    return jobs


def describe(jobs: Iterable[BuildJob]) -> str:
    """Human-readable plan: per job, the exact CMake arguments and patches, nothing built."""
    lines = []
    for job in jobs:
        lines.append(f"{job.target.name}  (pin {job.pin.name}: llama-cpp-python {job.pin.version}, "
                     f"llama.cpp {job.pin.llama_cpp_commit})")
        lines.append(f"  {job.target.description}")
        lines.append(f"  platform: {job.platform}   index: {job.target.index}")
        lines.append("  cmake:")
        lines.extend(f"    {arg}" for arg in job.cmake_args())
        lines.append("  patches:" + ("" if job.pin.patches else " (none)"))
        lines.extend(f"    patches/{job.pin.version}/{p}" for p in job.pin.patches)
        lines.append("")
    return "\n".join(lines)


def to_json(jobs: Iterable[BuildJob]) -> str:
    """The plan for machines: what ``describe`` prints, as a JSON list (one object per job)."""
    return json.dumps([{"job": job.name, "key": job.key,
                        "pin": {"name": job.pin.name, "version": job.pin.version,
                                "llama_cpp_commit": job.pin.llama_cpp_commit, "sdist_sha256": job.pin.sdist_sha256,
                                "build": job.pin.build},
                        "target": {"name": job.target.name, "description": job.target.description,
                                   "platform": job.platform, "index": job.target.index},
                        "cmake_args": job.cmake_args(),
                        "patches": [f"patches/{job.pin.version}/{p}" for p in job.pin.patches]}
                       for job in jobs], indent=2)
