"""build_config/sysroot.toml: what the emulated arm64 test bed is made of (Debian packages, pinned wheels,
the smoke check), validated."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from llama_wheels.config.toml import Table, read_toml
from llama_wheels.core.cache import hash_key
from llama_wheels.core.errors import ConfigError

LAYOUT = "1"  # bump when the sysroot's on-disk layout changes: every sysroot is built anew
_DEB_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:all)?$")
EXACT_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+!]*$")
PROJECT = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True, kw_only=True)
class SysrootSpec:
    """build_config/sysroot.toml, validated."""

    source: Path
    data: Mapping[str, Any]  # the parsed TOML: what the key is computed over
    python: str  # "3.11": the guest runs usr/bin/python3.11
    arch: str  # Debian architecture, "arm64"
    packages: tuple[str, ...]
    wheel_platform: str
    wheels: Mapping[str, str]  # normalized project name -> exact version
    smoke_cpu: str
    smoke_imports: tuple[str, ...]
    wheel_sha256: Mapping[str, str] = field(default_factory=dict)  # project -> the wheel's sha256 (none here)

    @property
    def key(self) -> str:
        return hash_key([LAYOUT, json.dumps(self.data, sort_keys=True)])


def load_sysroot_spec(root: Path) -> SysrootSpec:
    """Load and validate ``root/build_config/sysroot.toml``."""
    path = root / "build_config" / "sysroot.toml"
    data = read_toml(path)
    doc = Table(data, str(path))
    doc.check_keys(("python", "debian", "wheels", "smoke"))
    python = doc.match("python", re.compile(r"^3\.\d+$"), "a Python version like 3.11")

    debian = Table(doc.get("debian", dict), f"{path}: debian")
    debian.check_keys(("arch", "packages"))
    packages = _string_list(debian, "packages", _DEB_NAME, "a Debian package name (optionally NAME:all)")

    wheels = Table(doc.get("wheels", dict), f"{path}: wheels")
    wheels.check_keys(("platform", "pins"))
    platform = wheels.match(
        "platform", re.compile(r"^[a-z0-9_]+_aarch64$"), "an aarch64 tag like manylinux2014_aarch64"
    )
    pins = Table(wheels.get("pins", dict), f"{wheels.where}.pins")
    pinned: dict[str, str] = {}
    for project, version in pins.data.items():
        if not PROJECT.match(project):
            raise ConfigError(f"{pins.where}: {project!r} is not a PyPI project name")
        if not isinstance(version, str) or not EXACT_VERSION.match(version):
            raise ConfigError(f'{pins.where}.{project}: {version!r} is not an exact version like "2.2.6"')
        if canonicalize_name(project) in pinned:
            raise ConfigError(
                f"{pins.where}.{project}: pinned twice (names compare case- and -_.-insensitively)"
            )
        pinned[canonicalize_name(project)] = version
    if not pinned:
        raise ConfigError(f"{pins.where}: empty; the guest needs at least numpy and pytest")

    smoke = Table(doc.get("smoke", dict), f"{path}: smoke")
    smoke.check_keys(("cpu", "imports"))
    return SysrootSpec(
        source=path,
        data=data,
        python=python,
        arch=debian.match("arch", re.compile(r"^[a-z0-9]+$"), "a Debian architecture like arm64"),
        packages=packages,
        wheel_platform=platform,
        wheels=pinned,
        smoke_cpu=smoke.get("cpu", str),
        smoke_imports=_string_list(smoke, "imports", MODULE, "a module name"),
    )


def _string_list(table: Table, key: str, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
    items = table.get(key, list)
    for item in items:
        if not isinstance(item, str) or not pattern.match(item):
            raise ConfigError(f"{table.where}.{key}: {item!r} is not {what}")
    duplicates = sorted({item for item in items if items.count(item) > 1})
    if duplicates:
        raise ConfigError(f"{table.where}.{key}: listed twice: {', '.join(duplicates)}")
    if not items:
        raise ConfigError(f"{table.where}.{key}: empty")
    return tuple(items)
