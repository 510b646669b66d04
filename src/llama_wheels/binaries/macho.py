"""What a Mach-O file says to dyld, read with macholib on any machine: architecture, minimum macOS, install
name, the libraries it loads, its rpaths, and any string in it that names a build machine's directory.

The one Mach-O reader: the static checks of macOS wheels (stages/macos.py) and ``llama-wheels inspect``
(release/inspection.py) both read through it, so they cannot disagree about a file.
"""

from __future__ import annotations

import re
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from macholib import mach_o
from macholib.MachO import MachO

from llama_wheels.core.errors import RepairError

_MAGICS = {
    struct.pack("<I", m) for m in (mach_o.MH_MAGIC, mach_o.MH_MAGIC_64)
} | {struct.pack(">I", m)
     for m in (mach_o.MH_MAGIC, mach_o.MH_MAGIC_64, mach_o.FAT_MAGIC, mach_o.FAT_MAGIC_64)}
_LOADS = {
    mach_o.LC_LOAD_DYLIB,
    mach_o.LC_LOAD_WEAK_DYLIB,
    mach_o.LC_REEXPORT_DYLIB,
    mach_o.LC_LAZY_LOAD_DYLIB,
    mach_o.LC_LOAD_UPWARD_DYLIB,
}
# Directories only a build machine has: homes (macOS runners build in /Users/runner), temp, Homebrew.
_BUILD_PATH = re.compile(rb"(?<![\w.~/-])(?:/Users|/home|/root|/tmp|/private/(?:var|tmp)|/var/folders"
                         rb"|/opt/homebrew|/usr/local)/[\x21-\x7e]*")
UNKNOWN_MINOS = "unknown"  # a slice without LC_BUILD_VERSION or LC_VERSION_MIN_MACOSX


@dataclass(frozen=True, kw_only=True)
class MachOFacts:
    path: str  # inside the wheel
    filetype: str  # per mach_o.MH_FILETYPE_SHORTNAMES: "dylib", "bundle", "execute", ...
    archs: tuple[str, ...]  # per slice, per mach_o.CPU_TYPE_NAMES, e.g. ("ARM64",)
    minos: tuple[str, ...]  # per slice, e.g. ("11.0",); UNKNOWN_MINOS where a slice records none
    install_name: str | None
    dylibs: tuple[str, ...]  # what it loads, as written in the load commands
    rpaths: tuple[str, ...]
    dyld_environment: tuple[str, ...] = ()  # LC_DYLD_ENVIRONMENT (only meaningful in executables)
    build_paths: tuple[str, ...] = ()  # strings in the file that name a build machine's directories


def is_macho(head: bytes) -> bool:
    """Do these first bytes of a file start a Mach-O file (thin or fat, 32 or 64 bit, either byte order)?"""
    return head[:4] in _MAGICS


def _version(packed: int) -> str:
    major, minor, patch = packed >> 16, (packed >> 8) & 0xFF, packed & 0xFF
    return f"{major}.{minor}" + (f".{patch}" if patch else "")


def _string(cmd: object, load: object, data: bytes, field: str) -> str:
    offset = getattr(cmd, field) - load.__class__._size_ - cmd.__class__._size_  # type: ignore[attr-defined]
    return data[offset:data.index(b"\x00", offset)].decode()


def macho_facts(name: str, file: Path | bytes) -> MachOFacts:
    """Architecture, minimum OS, install name, loaded libraries and rpaths of one Mach-O file (its path or
    its bytes); ``name`` is what messages call it. RepairError if macholib cannot read it."""
    if isinstance(file, bytes):
        with tempfile.TemporaryDirectory(prefix="llama-wheels-macho-") as tmp:
            copy = Path(tmp) / "file"
            copy.write_bytes(file)
            return macho_facts(name, copy)
    try:
        macho = MachO(str(file), allow_unknown_load_commands=True)
    except (ValueError, struct.error) as exc:
        raise RepairError(f"{name}: not a readable Mach-O file ({exc})") from None
    archs, minos, dylibs, rpaths, environment = [], [], [], [], []
    install_name = None
    filetypes = set()
    for header in macho.headers:
        archs.append(mach_o.CPU_TYPE_NAMES.get(header.header.cputype, hex(header.header.cputype)))
        filetypes.add(mach_o.MH_FILETYPE_SHORTNAMES.get(header.header.filetype, hex(header.header.filetype)))
        found = None
        for load, cmd, data in header.commands:
            if load.cmd == mach_o.LC_BUILD_VERSION or load.cmd == mach_o.LC_VERSION_MIN_MACOSX:
                found = _version(cmd.minos if load.cmd == mach_o.LC_BUILD_VERSION else cmd.version)
            elif load.cmd == mach_o.LC_ID_DYLIB:
                install_name = _string(cmd, load, data, "name")
            elif load.cmd in _LOADS:
                dylibs.append(_string(cmd, load, data, "name"))
            elif load.cmd == mach_o.LC_RPATH:
                rpaths.append(_string(cmd, load, data, "path"))
            elif load.cmd == mach_o.LC_DYLD_ENVIRONMENT:
                environment.append(_string(cmd, load, data, "name"))
        minos.append(found or UNKNOWN_MINOS)
    build_paths = dict.fromkeys(m.decode() for m in _BUILD_PATH.findall(file.read_bytes()))
    return MachOFacts(path=name, filetype="+".join(sorted(filetypes)), archs=tuple(archs),
                      minos=tuple(minos), install_name=install_name, dylibs=tuple(dict.fromkeys(dylibs)),
                      rpaths=tuple(dict.fromkeys(rpaths)), dyld_environment=tuple(environment),
                      build_paths=tuple(build_paths))


def wheel_machos(wheel: Path) -> list[MachOFacts]:
    """Facts of every Mach-O file in ``wheel`` (by magic number)."""
    facts = []
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            with archive.open(info) as fh:
                if not is_macho(fh.read(4)):
                    continue
            facts.append(macho_facts(info.filename, archive.read(info)))
    return facts
