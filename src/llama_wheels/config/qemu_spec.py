"""build_config/qemu.toml: the emulator of the ARM test bed, a Debian qemu-user .deb pinned by sha256, and
the instruction-counting qemu built from the same release's Debian source package ([build]), validated."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from llama_wheels.config.toml import Table, read_toml
from llama_wheels.core.errors import ConfigError

SHA256 = re.compile(r"^[0-9a-f]{64}$")
DEB_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
DEB_VERSION = re.compile(r"^([0-9]+:)?[0-9][A-Za-z0-9.+~-]*$")  # Debian policy 5.6.12, epoch included
WORD = re.compile(r"^[a-z0-9][a-z0-9-]*$")
MIRROR = re.compile(r"^https?://[^\s\[\]]+$")
_BINARY = re.compile(r"^usr/bin/qemu-[a-z0-9_]+$")
_SOURCE_FILE = re.compile(r"^[a-z0-9][a-z0-9+.~_-]*\.(tar\.(xz|gz|bz2)|diff\.gz)$")
_WHEEL = re.compile(r"^[A-Za-z0-9_.]+-[0-9][A-Za-z0-9_.]*-py3-none-any\.whl$")
_CONFIGURE_ARG = re.compile(r"^--[a-z0-9-]+(=[A-Za-z0-9_,.-]+)?$")
_NINJA_TARGET = re.compile(r"^qemu-[a-z0-9_]+$")
_PLUGIN_SOURCE = re.compile(r"^(src|benchmarks)/[A-Za-z0-9_/.-]+\.c$")


@dataclass(frozen=True, kw_only=True)
class QemuSpec:
    """build_config/qemu.toml, validated."""

    source: Path
    mirror: str  # "http://deb.debian.org/debian"
    suite: str  # "trixie"
    component: str  # "main"
    keyring: Path  # the OpenPGP keyring apt checks the suite's Release file with
    package: str  # "qemu-user"
    version: str  # the exact Debian version, epoch included: "1:10.0.13+ds-0+deb13u1"
    arch: str  # the Debian architecture of the machine that runs it: "amd64"
    sha256: str  # of the .deb
    binary: PurePosixPath  # inside the package: usr/bin/qemu-aarch64

    @property
    def sources_line(self) -> str:
        """The one line of the private apt sources list."""
        return f"deb [signed-by={self.keyring}] {self.mirror} {self.suite} {self.component}"

    @property
    def apt_name(self) -> str:
        """What apt-get download is asked for: exactly this package, architecture and version."""
        return f"{self.package}:{self.arch}={self.version}"


@dataclass(frozen=True, kw_only=True)
class QemuBuildSpec:
    """build_config/qemu.toml [build]: the plugin-capable qemu built from Debian's source package."""

    source: Path  # the TOML file
    debian: QemuSpec  # the private apt configuration ([debian]) the source package comes through
    package: str  # the source package: "qemu"
    version: str  # "1:10.0.13+ds-0+deb13u1"
    dsc_sha256: str
    files: tuple[tuple[str, str], ...]  # (file name, sha256) of every other file of the source package
    meson_wheel: str  # "meson-1.5.0-py3-none-any.whl", from PyPI
    meson_sha256: str
    target: str  # the one ninja target: "qemu-aarch64"
    configure: tuple[str, ...]
    plugin: Path  # the plugin's C source, absolute

    @property
    def sources_line(self) -> str:
        """The one line of the private apt sources list: the [debian] suite's sources."""
        d = self.debian
        return f"deb-src [signed-by={d.keyring}] {d.mirror} {d.suite} {d.component}"

    @property
    def apt_name(self) -> str:
        return f"{self.package}={self.version}"

    @property
    def meson_version(self) -> str:
        return self.meson_wheel.split("-")[1]


def load_qemu_spec(root: Path) -> QemuSpec:
    """Load and validate ``root/build_config/qemu.toml`` (its .deb; [build] is ``load_qemu_build_spec``'s)."""
    path = root / "build_config" / "qemu.toml"
    doc = Table(read_toml(path), str(path))
    doc.check_keys(("debian", "package", "build"))
    debian = Table(doc.get("debian", dict), f"{path}: debian")
    debian.check_keys(("mirror", "suite", "component", "keyring"))
    package = Table(doc.get("package", dict), f"{path}: package")
    package.check_keys(("name", "version", "arch", "sha256", "binary"))
    keyring = debian.get("keyring", str)
    if not keyring.startswith("/"):
        raise ConfigError(f"{debian.where}.keyring: {keyring!r} is not an absolute path to an apt keyring")
    return QemuSpec(
        source=path,
        mirror=debian.match("mirror", MIRROR, "a Debian mirror URL like http://deb.debian.org/debian"),
        suite=debian.match("suite", WORD, "a Debian suite like trixie"),
        component=debian.match("component", WORD, "an archive component like main"),
        keyring=Path(keyring),
        package=package.match("name", DEB_NAME, "a Debian package name"),
        version=package.match("version", DEB_VERSION, 'an exact Debian version like "1:10.0.13+ds-0+deb13u1"'),
        arch=package.match("arch", WORD, "a Debian architecture like amd64"),
        sha256=package.match("sha256", SHA256, "the .deb's sha256 (64 lowercase hex digits)"),
        binary=PurePosixPath(package.match("binary", _BINARY, "a path like usr/bin/qemu-aarch64")),
    )


def load_qemu_build_spec(root: Path) -> QemuBuildSpec:
    """Load and validate ``root/build_config/qemu.toml``'s [build] table (and [debian], which it uses)."""
    debian = load_qemu_spec(root)
    path = debian.source
    doc = Table(read_toml(path), str(path))
    build = Table(doc.get("build", dict), f"{path}: build")
    build.check_keys(("source", "version", "dsc_sha256", "files", "meson_wheel", "meson_sha256", "target",
                      "plugin", "configure"))
    files = Table(build.get("files", dict), f"{path}: build.files")
    pinned = []
    for name in sorted(files.data):
        if not _SOURCE_FILE.match(name):
            raise ConfigError(f"{files.where}: {name!r} is not a source package file name (NAME_VERSION.tar.xz)")
        pinned.append((name, files.match(name, SHA256, "a sha256 (64 lowercase hex digits)")))
    if not pinned:
        raise ConfigError(f"{files.where}: empty; pin every file of the source package but the .dsc")
    configure = build.get("configure", list)
    for arg in configure:
        if not isinstance(arg, str) or not _CONFIGURE_ARG.match(arg):
            raise ConfigError(f"{build.where}.configure: {arg!r} is not a configure option like --disable-docs")
    for needed in ("--enable-plugins", "--target-list=aarch64-linux-user"):
        if needed not in configure:
            raise ConfigError(f"{build.where}.configure: lacks {needed}; the instruction counter needs it")
    if "--static" in configure:
        raise ConfigError(f"{build.where}.configure: --static, but TCG plugins need a dynamic qemu; remove it")
    plugin = build.match("plugin", _PLUGIN_SOURCE,
                         "a C file of this checkout like benchmarks/counting/plugins/insn_count.c")
    return QemuBuildSpec(
        source=path,
        debian=debian,
        package=build.match("source", DEB_NAME, "a Debian source package name"),
        version=build.match("version", DEB_VERSION, 'an exact Debian version like "1:10.0.13+ds-0+deb13u1"'),
        dsc_sha256=build.match("dsc_sha256", SHA256, "the .dsc's sha256 (64 lowercase hex digits)"),
        files=tuple(pinned),
        meson_wheel=build.match("meson_wheel", _WHEEL, "a wheel file name like meson-1.5.0-py3-none-any.whl"),
        meson_sha256=build.match("meson_sha256", SHA256, "the wheel's sha256 (64 lowercase hex digits)"),
        target=build.match("target", _NINJA_TARGET, "a qemu binary's ninja target like qemu-aarch64"),
        configure=tuple(configure),
        plugin=root / plugin,
    )
