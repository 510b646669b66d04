"""build_config/musl_bed.toml: what the emulated musl test bed is built from (Debian source packages and the
musl .deb pinned by sha256, the CPython configure answers, the pinned musllinux wheels), validated."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from packaging.utils import canonicalize_name

from llama_wheels.config.qemu_spec import DEB_NAME, DEB_VERSION, MIRROR, SHA256, WORD, QemuSpec
from llama_wheels.config.sysroot_spec import EXACT_VERSION, MODULE, PROJECT
from llama_wheels.config.toml import Table, read_toml
from llama_wheels.core.errors import ConfigError

_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_~-]*$")
_CACHE_VAR = re.compile(r"^ac_cv_[a-z0-9_]+$")
_OPTION = re.compile(r"^--[a-z0-9-]+(=\S+)?$")
_PATCH = re.compile(r"^[0-9]{4}-[a-z0-9.-]+\.patch$")


@dataclass(frozen=True, kw_only=True)
class SourcePackage:
    """One Debian source package: ``apt-get source NAME=VERSION`` gives exactly ``files``."""

    name: str
    version: str
    files: Mapping[str, str]  # file name -> sha256
    where: str  # the TOML entry, for error messages: "build_config/musl_bed.toml: sources.zlib"

    @property
    def apt_name(self) -> str:
        return f"{self.name}={self.version}"


@dataclass(frozen=True, kw_only=True)
class MuslBedSpec:
    """build_config/musl_bed.toml, validated. Its fields named as SysrootSpec's are what the shared sysroot
    steps (wheels, precompile, smoke) read."""

    source: Path
    data: Mapping[str, Any]  # the parsed TOML: part of the bed's key
    python: str  # "3.11"
    zig_target: str  # "aarch64-linux-musl"
    mirror: str
    suite: str
    component: str
    keyring: Path
    sources: Mapping[str, SourcePackage]  # "python3.11" / "libffi" / "zlib" / "sqlite3"
    loader: QemuSpec  # the musl .deb, described as qemu.toml's package is (mirror, suite, name, sha256)
    configure: tuple[str, ...]
    cache_vars: Mapping[str, str]
    cflags: str
    opt: str
    patches: tuple[str, ...]
    wheel_platform: str
    wheels: Mapping[str, str]  # normalized project name -> exact version
    wheel_sha256: Mapping[str, str]  # normalized project name -> sha256 of its wheel
    smoke_cpu: str
    smoke_imports: tuple[str, ...]

    def sources_line(self, kind: str) -> str:
        """The private apt sources line: ``deb-src`` for the source packages, ``deb`` for the loader (its suite)."""
        suite = self.loader.suite if kind == "deb" else self.suite
        return f"{kind} [signed-by={self.keyring}] {self.mirror} {suite} {self.component}"

    @property
    def canonical(self) -> str:
        return json.dumps(self.data, sort_keys=True)


_REQUIRED_SOURCES = ("python3.11", "libffi", "zlib", "sqlite3")


def load_musl_bed_spec(root: Path) -> MuslBedSpec:
    """Load and validate ``root/build_config/musl_bed.toml``."""
    path = root / "build_config" / "musl_bed.toml"
    data = read_toml(path)
    doc = Table(data, str(path))
    doc.check_keys(("python", "zig_target", "debian", "sources", "loader", "cpython", "wheels", "smoke"))
    python = doc.match("python", re.compile(r"^3\.\d+$"), "a Python version like 3.11")

    debian = Table(doc.get("debian", dict), f"{path}: debian")
    debian.check_keys(("mirror", "suite", "component", "keyring"))
    keyring = debian.get("keyring", str)
    if not keyring.startswith("/"):
        raise ConfigError(f"{debian.where}.keyring: {keyring!r} is not an absolute path to an apt keyring")
    mirror = debian.match("mirror", MIRROR, "a Debian mirror URL like http://deb.debian.org/debian")
    suite = debian.match("suite", WORD, "a Debian suite like bookworm")
    component = debian.match("component", WORD, "an archive component like main")

    sources_table = Table(doc.get("sources", dict), f"{path}: sources")
    sources_table.check_keys(_REQUIRED_SOURCES)
    sources = {name: _source(sources_table, name) for name in _REQUIRED_SOURCES}
    if f"python{python}" not in sources:
        raise ConfigError(f"{sources_table.where}: no python{python} source package for python = {python!r}")

    loader = Table(doc.get("loader", dict), f"{path}: loader")
    loader.check_keys(("suite", "package", "version", "arch", "sha256"))
    loader_spec = QemuSpec(
        source=path, mirror=mirror, suite=loader.match("suite", WORD, "a Debian suite like trixie"),
        component=component, keyring=Path(keyring),
        package=loader.match("package", DEB_NAME, "a Debian package name"),
        version=loader.match("version", DEB_VERSION, 'an exact Debian version like "1.2.3-1"'),
        arch=loader.match("arch", WORD, "a Debian architecture like arm64"),
        sha256=loader.match("sha256", SHA256, "the .deb's sha256 (64 lowercase hex digits)"),
        binary=PurePosixPath("lib/ld-musl-aarch64.so.1"),
    )

    cpython = Table(doc.get("cpython", dict), f"{path}: cpython")
    cpython.check_keys(("configure", "cache", "cflags", "opt", "patches"))
    configure = _strings(cpython, "configure", _OPTION, "a configure option like --disable-test-modules")
    cache = Table(cpython.get("cache", dict), f"{cpython.where}.cache")
    for key, value in cache.data.items():
        if not _CACHE_VAR.match(key) or not isinstance(value, str) or not re.match(r"^[a-z0-9]+$", value):
            raise ConfigError(f"{cache.where}.{key}: not an autoconf cache answer like ac_cv_file__dev_ptc = \"no\"")
    patches = _strings(cpython, "patches", _PATCH, "a patch file name like 0001-slug.patch", empty=True)
    for patch in patches:
        if not (root / "patches" / "musl-bed" / patch).is_file():
            raise ConfigError(f"{cpython.where}.patches: patches/musl-bed/{patch} does not exist")

    wheels = Table(doc.get("wheels", dict), f"{path}: wheels")
    wheels.check_keys(("platform", "pins", "sha256"))
    platform = wheels.match("platform", re.compile(r"^musllinux_\d+_\d+_aarch64$"),
                            "a musllinux aarch64 tag like musllinux_1_2_aarch64")
    pins = _projects(Table(wheels.get("pins", dict), f"{wheels.where}.pins"), EXACT_VERSION,
                     'an exact version like "2.2.6"')
    hashes = _projects(Table(wheels.get("sha256", dict), f"{wheels.where}.sha256"), SHA256,
                       "the wheel's sha256 (64 lowercase hex digits)")
    if set(pins) != set(hashes):
        odd = sorted(set(pins) ^ set(hashes))
        raise ConfigError(f"{wheels.where}: pins and sha256 must name the same projects; differ in {', '.join(odd)}")

    smoke = Table(doc.get("smoke", dict), f"{path}: smoke")
    smoke.check_keys(("cpu", "imports"))
    return MuslBedSpec(
        source=path, data=data, python=python,
        zig_target=doc.match("zig_target", re.compile(r"^aarch64-linux-musl$"), "aarch64-linux-musl"),
        mirror=mirror, suite=suite, component=component, keyring=Path(keyring), sources=sources,
        loader=loader_spec, configure=configure, cache_vars=dict(cache.data),
        cflags=cpython.get("cflags", str), opt=cpython.get("opt", str), patches=patches,
        wheel_platform=platform, wheels=pins, wheel_sha256=hashes,
        smoke_cpu=smoke.get("cpu", str), smoke_imports=_strings(smoke, "imports", MODULE, "a module name"),
    )


def _source(table: Table, name: str) -> SourcePackage:
    entry = Table(table.get(name, dict), f"{table.where}.{name}")
    entry.check_keys(("version", "files"))
    files = Table(entry.get("files", dict), f"{entry.where}.files")
    for file, sha256 in files.data.items():
        if not _FILE.match(file):
            raise ConfigError(f"{files.where}: {file!r} is not a source package file name")
        if not isinstance(sha256, str) or not SHA256.match(sha256):
            raise ConfigError(f"{files.where}.{file}: {sha256!r} is not a sha256 (64 lowercase hex digits)")
    if not any(file.endswith(".dsc") for file in files.data):
        raise ConfigError(f"{files.where}: no .dsc; list every file apt-get source --print-uris names")
    return SourcePackage(name=name, version=entry.match("version", DEB_VERSION, "an exact Debian version"),
                         files=dict(files.data), where=entry.where)


def _projects(table: Table, pattern: re.Pattern[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for project, value in table.data.items():
        if not PROJECT.match(project):
            raise ConfigError(f"{table.where}: {project!r} is not a PyPI project name")
        if not isinstance(value, str) or not pattern.match(value):
            raise ConfigError(f"{table.where}.{project}: {value!r} is not {what}")
        if canonicalize_name(project) in out:
            raise ConfigError(f"{table.where}.{project}: listed twice (names compare case- and -_.-insensitively)")
        out[canonicalize_name(project)] = value
    if not out:
        raise ConfigError(f"{table.where}: empty")
    return out


def _strings(table: Table, key: str, pattern: re.Pattern[str], what: str, *, empty: bool = False) -> tuple[str, ...]:
    items = table.get(key, list, [] if empty else None)
    for item in items:
        if not isinstance(item, str) or not pattern.match(item):
            raise ConfigError(f"{table.where}.{key}: {item!r} is not {what}")
    if len(set(items)) != len(items):
        raise ConfigError(f"{table.where}.{key}: an entry is listed twice")
    if not items and not empty:
        raise ConfigError(f"{table.where}.{key}: empty")
    return tuple(items)
