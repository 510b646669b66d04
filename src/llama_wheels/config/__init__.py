"""build_config/*.toml, parsed once into frozen, typed objects.

Parsing is strict: an unknown key is an error that suggests the nearest valid one, and every
reference (default pin, default target, a target's platform) must resolve. What the pinned *source*
defines is checked later, by ``plan`` against the prepared tree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from llama_wheels.config.platforms import PLATFORMS
from llama_wheels.config.toml import Table, read_toml, suggest
from llama_wheels.core.errors import ConfigError

SwitchValue = bool | str
# A pin maps a logical switch to a CMake variable, to a compiler flag template, or to False (absent).
SwitchMapping = str | bool



@dataclass(frozen=True)
class SwitchType:
    """The values a target may give a switch: ``true``/``false`` (``kind`` bool), a non-empty string (``kind``
    str), or one of ``choices`` (an enum). A pin maps the switch to CMake; the type is the same at every pin."""

    kind: type[bool] | type[str]
    choices: tuple[str, ...] = ()
    example: str = ""

    def allowed(self) -> str:
        if self.kind is bool:
            return "true or false"
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        return f"a non-empty string (e.g. {self.example!r})" if self.example else "a non-empty string"

    def accepts(self, value: object) -> bool:
        if self.kind is bool:
            return isinstance(value, bool)
        return isinstance(value, str) and bool(value) and (not self.choices or value in self.choices)


BOOLEAN = SwitchType(bool)
# Every logical switch a target may set, with its type: the one place that says what a value may be.
SWITCH_TYPES: Mapping[str, SwitchType] = {
    "native": BOOLEAN, "repack": BOOLEAN, "backend_dl": BOOLEAN, "all_variants": BOOLEAN,
    # the fixed ISA of a build without CPU variants, as -march spells it
    "arm_arch": SwitchType(str, example="armv8.2-a+dotprod"),
    "openmp": BOOLEAN, "openssl": BOOLEAN, "llava": BOOLEAN, "metal": BOOLEAN, "accelerate": BOOLEAN,
    "blas": BOOLEAN,
    # x86 instruction-set extensions of a fixed-ISA x86_64 build (ggml compiles with -m<feature>)
    "sse42": BOOLEAN, "avx": BOOLEAN, "f16c": BOOLEAN, "fma": BOOLEAN, "avx2": BOOLEAN, "bmi2": BOOLEAN,
    "avx_vnni": BOOLEAN, "avx512": BOOLEAN, "avx512_vbmi": BOOLEAN, "avx512_vnni": BOOLEAN,
    "avx512_bf16": BOOLEAN,
}
SWITCHES = tuple(SWITCH_TYPES)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
T = TypeVar("T")


def sdist_filename(version: str) -> str:
    """The file name of llama-cpp-python ``version``'s sdist (as PyPI names sdists since PEP 625)."""
    return f"llama_cpp_python-{version}.tar.gz"


@dataclass(frozen=True, kw_only=True)
class Pin:
    name: str
    version: str  # the llama-cpp-python release on PyPI, e.g. "0.3.36"
    sdist_sha256: str  # its sdist's sha256: every download is checked against it
    llama_cpp_commit: str  # the llama.cpp commit the sdist vendors (7-40 hex digits; `pin add` reads it)
    patches: tuple[str, ...]  # the series applied in this order, from patches/<version>/ (format-patch files)
    # Resolved: a table with ``extends = "<pin>"`` holds its parent's entries under its own.
    switches: Mapping[str, SwitchMapping]
    # True: CI builds this pin's targets and a release publishes them beside every earlier release's wheels
    # (several versions side by side in one index). False: built on request only.
    publish: bool = False
    # PEP 427 build tag of this pin's wheels (``...-0.3.36-2-py3-none-...whl``): a rebuild of an already
    # published version gets a new file name (an old name never changes its bytes) that pip prefers.
    build: int | None = None
    # What ``plan`` builds at this pin when no target is named (empty: the default target).
    targets: tuple[str, ...] = ()

    @property
    def sdist_filename(self) -> str:
        return sdist_filename(self.version)

    @property
    def build_tag(self) -> str | None:
        """The wheel file name's build tag, or None (no build tag)."""
        return None if self.build is None else str(self.build)


@dataclass(frozen=True, kw_only=True)
class Target:
    name: str
    description: str  # one line: what the wheel is and for whom (`llama-wheels plan` prints it)
    platform: str  # where it runs and how it is built and repaired (config/platforms.py), e.g. "linux-aarch64"
    index: str  # the package index family it is published in ("cpu", "armv8.2-dotprod", ...)
    # The logical switches and their values: true/false, or a value such as an ISA for arm_arch.
    switches: Mapping[str, SwitchValue]
    # False: built on request (e.g. by benchmarks/), never by CI or a release.
    publish: bool = True
    # A fixed-ISA target compiled with exactly the instruction set of this CPU variant of a runtime-dispatch
    # build (ggml's name, e.g. "haswell"): the exact-ISA wheel the dispatch benchmark compares it with.
    variant: str | None = None


@dataclass(frozen=True, kw_only=True)
class Config:
    root: Path
    pins: Mapping[str, Pin]
    targets: Mapping[str, Target]
    default_pin: str
    default_target: str

    @property
    def patches_dir(self) -> Path:
        return self.root / "patches"

    def pin(self, name: str | None) -> Pin:
        return _lookup(self.pins, name or self.default_pin, "pin", "build_config/pins.toml")

    def target(self, name: str | None) -> Target:
        return _lookup(self.targets, name or self.default_target, "target", "build_config/targets.toml")


def _lookup(table: Mapping[str, T], name: str, kind: str, where: str) -> T:
    if name in table:
        return table[name]
    raise ConfigError(f"unknown {kind} {name!r}{suggest(name, table)}; the {kind}s are defined in {where}")


def _parse_pin(name: str, data: Any, source: str) -> tuple[Pin, str | None]:
    """The pin as written, and the pin its switch table extends (resolved by ``_resolve_switches``)."""
    t = Table(data, f"{source}: pins.{name}")
    t.check_keys(("version", "sdist_sha256", "llama_cpp_commit", "patches", "switches", "publish", "build",
                  "targets"))
    patches = t.get("patches", list)
    if not all(isinstance(p, str) and p.endswith(".patch") for p in patches):
        raise ConfigError(f"{t.where}.patches: every entry must be a file name ending in .patch")
    targets = t.get("targets", list, [])
    if (not targets and "targets" in t.data) or not all(isinstance(n, str) for n in targets):
        raise ConfigError(f"{t.where}.targets: a non-empty list of target names (or leave it out: the default "
                          "target)")
    switches = Table(t.get("switches", dict), f"{t.where}.switches")
    switches.check_keys((*SWITCHES, "extends"))
    extends = switches.get("extends", str) if "extends" in switches.data else None
    for key, value in switches.data.items():
        if key == "extends":
            continue
        if value is True or not isinstance(value, str | bool):
            raise ConfigError(f"{switches.where}.{key}: must be a CMake variable name, a '-flag={{}}' or false")
        if isinstance(value, str) and value.startswith("-") and "{}" not in value:
            raise ConfigError(f"{switches.where}.{key}: compiler flag template {value!r} needs a {{}}")
    build = t.get("build", int) if "build" in t.data else None
    if build is not None and (isinstance(build, bool) or build < 1):
        raise ConfigError(f"{t.where}.build: {build!r} is not a build number (an integer >= 1, the wheel's "
                          "PEP 427 build tag); remove it for wheels without a build tag")
    pin = Pin(
        name=name,
        publish=t.get("publish", bool, False),
        build=build,
        version=t.match("version", _VERSION, "a release version like 0.3.36"),
        sdist_sha256=t.match("sdist_sha256", _SHA256, "a lowercase hex sha256"),
        llama_cpp_commit=t.match("llama_cpp_commit", _COMMIT, "a git commit (7-40 hex digits)"),
        patches=tuple(patches),
        switches={k: v for k, v in switches.data.items() if k != "extends"},
        targets=tuple(targets),
    )
    return pin, extends


def _resolve_switches(pins: Mapping[str, Pin], parents: Mapping[str, str | None], source: str) -> dict[str, Pin]:
    """Each pin with its switch table merged over the tables it extends (nearest wins)."""
    resolved = {}
    for name, pin in pins.items():
        chain = [name]
        while (parent := parents[chain[-1]]) is not None:
            where = f"{source}: pins.{chain[-1]}.switches.extends"
            if parent not in pins:
                raise ConfigError(f"{where}: unknown pin {parent!r}{suggest(parent, pins)}; name a pin of this file")
            if parent in chain:
                raise ConfigError(f"{where}: {' -> '.join([*chain, parent])} is a cycle; let one table stand alone")
            chain.append(parent)
        merged: dict[str, SwitchMapping] = {}
        for link in reversed(chain):
            merged.update(pins[link].switches)
        resolved[name] = replace(pin, switches=merged)
    return resolved


def _toml(value: object) -> str:
    """``value`` as TOML writes it (what the user typed)."""
    if isinstance(value, bool):
        return str(value).lower()
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _parse_target(name: str, data: Any, source: str) -> Target:
    t = Table(data, f"{source}: targets.{name}")
    t.check_keys(("description", "platform", "index", "publish", "variant", "switches"))
    platform = t.get("platform", str)
    if platform not in PLATFORMS:
        raise ConfigError(f"{t.where}.platform: unknown platform {platform!r}{suggest(platform, PLATFORMS)}")
    switches = Table(t.get("switches", dict), f"{t.where}.switches")
    switches.check_keys(SWITCHES)
    for key, value in switches.data.items():
        if not SWITCH_TYPES[key].accepts(value):
            raise ConfigError(f"{switches.where}.{key}: {_toml(value)} is not {SWITCH_TYPES[key].allowed()}")
    publish = t.get("publish", bool, True)
    if switches.data.get("native") is True and publish:
        raise ConfigError(f"{t.where}: native = true compiles for the build machine's CPU only; "
                          "such a wheel must not be published (set publish = false)")
    variant = t.get("variant", str) if "variant" in t.data else None
    if variant is not None and switches.data.get("all_variants") is True:
        raise ConfigError(f"{t.where}.variant: a runtime-dispatch target (all_variants = true) ships every "
                          "variant; 'variant' names the one ISA of a fixed-ISA target")
    return Target(
        name=name,
        description=t.get("description", str),
        platform=platform,
        index=t.get("index", str),
        switches=dict(switches.data),
        publish=publish,
        variant=variant,
    )


def load(root: Path) -> Config:
    """Load and validate ``root/build_config``."""
    pins_path = root / "build_config" / "pins.toml"
    targets_path = root / "build_config" / "targets.toml"
    pins_doc = Table(read_toml(pins_path), str(pins_path))
    pins_doc.check_keys(("default", "pins"))
    targets_doc = Table(read_toml(targets_path), str(targets_path))
    targets_doc.check_keys(("default", "targets"))

    parsed = {n: _parse_pin(n, d, str(pins_path)) for n, d in pins_doc.get("pins", dict).items()}
    pins = _resolve_switches({n: p for n, (p, _) in parsed.items()}, {n: e for n, (_, e) in parsed.items()},
                             str(pins_path))
    targets = {n: _parse_target(n, d, str(targets_path)) for n, d in targets_doc.get("targets", dict).items()}
    config = Config(
        root=root,
        pins=pins,
        targets=targets,
        default_pin=pins_doc.get("default", str),
        default_target=targets_doc.get("default", str),
    )
    for table, default, path in ((pins, config.default_pin, pins_path),
                                 (targets, config.default_target, targets_path)):
        if default not in table:  # the defaults must resolve; the culprit is the file's key, not an option typed
            raise ConfigError(f"{path}: default = {default!r} names no entry of this file{suggest(default, table)}; "
                              "set it to one of them")
    for pin in pins.values():
        for name in pin.targets:
            if name not in targets:
                raise ConfigError(f"{pins_path}: pins.{pin.name}.targets: unknown target {name!r}"
                                  f"{suggest(name, targets)}; the targets are defined in build_config/targets.toml")
        for patch in pin.patches:
            if not (config.patches_dir / pin.version / patch).is_file():
                raise ConfigError(
                    f"{pins_path}: pins.{pin.name}.patches: {patch} not found in patches/{pin.version}/"
                )
    return config
