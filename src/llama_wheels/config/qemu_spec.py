"""build_config/qemu.toml: the emulator of the ARM test bed, a Debian qemu-user .deb pinned by sha256,
validated."""

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


def load_qemu_spec(root: Path) -> QemuSpec:
    """Load and validate ``root/build_config/qemu.toml``."""
    path = root / "build_config" / "qemu.toml"
    doc = Table(read_toml(path), str(path))
    doc.check_keys(("debian", "package"))
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
