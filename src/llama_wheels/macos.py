"""Static checks of a macOS wheel, runnable on any machine: what dyld and ``delocate`` would see.

delocate (the macOS repair tool) only runs on macOS, and a wheel cross built here with zig cannot be
loaded here either. What the loader will do is decided by the Mach-O headers, which ``macholib`` reads
anywhere. For every Mach-O file in the wheel (found by magic number, not by file name):

- its architecture is arm64 only (no x86_64 slice, not a fat file with other slices);
- its minimum macOS (``LC_BUILD_VERSION``/``LC_VERSION_MIN_MACOSX`` minos) is the platform's deployment
  target, which is also what the wheel's tag promises (``macosx_11_0_arm64`` <-> 11.0);
- every library it loads is a system library (``/usr/lib/``, ``/System/Library/``) or one bundled in the
  wheel, reached through ``@loader_path`` or ``@rpath`` with an ``@loader_path``-relative ``LC_RPATH``;
  never a build path, ``/opt/homebrew``, ``/usr/local`` or ``@executable_path``.

On macOS, ``repair.repair_wheel`` runs ``delocate-wheel`` first and these checks after it.
"""

from __future__ import annotations

import posixpath
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from macholib import mach_o
from macholib.MachO import MachO

from .errors import RepairError
from .platforms import Platform

_MAGICS = {
    struct.pack("<I", m) for m in (mach_o.MH_MAGIC, mach_o.MH_MAGIC_64)
} | {struct.pack(">I", m)
     for m in (mach_o.MH_MAGIC, mach_o.MH_MAGIC_64, mach_o.FAT_MAGIC, mach_o.FAT_MAGIC_64)}
_SYSTEM_PREFIXES = ("/usr/lib/", "/System/Library/")
_LOADS = {
    mach_o.LC_LOAD_DYLIB,
    mach_o.LC_LOAD_WEAK_DYLIB,
    mach_o.LC_REEXPORT_DYLIB,
    mach_o.LC_LAZY_LOAD_DYLIB,
    mach_o.LC_LOAD_UPWARD_DYLIB,
}
_PACKAGE_DIRS = ("llama_cpp/",)


@dataclass(frozen=True, kw_only=True)
class MachOFacts:
    path: str  # inside the wheel
    archs: tuple[str, ...]  # e.g. ("ARM64",)
    minos: tuple[str, ...]  # per slice, e.g. ("11.0",)
    install_name: str | None
    dylibs: tuple[str, ...]  # what it loads, as written in the load commands
    rpaths: tuple[str, ...]


def _version(packed: int) -> str:
    major, minor, patch = packed >> 16, (packed >> 8) & 0xFF, packed & 0xFF
    return f"{major}.{minor}" + (f".{patch}" if patch else "")


def _string(cmd: object, load: object, data: bytes, field: str) -> str:
    offset = getattr(cmd, field) - load.__class__._size_ - cmd.__class__._size_  # type: ignore[attr-defined]
    return data[offset:data.index(b"\x00", offset)].decode()


def macho_facts(name: str, file: Path) -> MachOFacts:
    """Architecture, minimum OS, install name, loaded libraries and rpaths of one Mach-O file."""
    try:
        macho = MachO(str(file), allow_unknown_load_commands=True)
    except (ValueError, struct.error) as exc:
        raise RepairError(f"{name}: not a readable Mach-O file ({exc})") from None
    archs, minos, dylibs, rpaths = [], [], [], []
    install_name = None
    for header in macho.headers:
        archs.append(mach_o.CPU_TYPE_NAMES.get(header.header.cputype, hex(header.header.cputype)))
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
        minos.append(found or "unknown")
    return MachOFacts(path=name, archs=tuple(archs), minos=tuple(minos), install_name=install_name,
                      dylibs=tuple(dict.fromkeys(dylibs)), rpaths=tuple(dict.fromkeys(rpaths)))


def wheel_machos(wheel: Path) -> list[MachOFacts]:
    """Facts of every Mach-O file in ``wheel`` (by magic number)."""
    facts = []
    with zipfile.ZipFile(wheel) as archive, tempfile.TemporaryDirectory(prefix="llama-wheels-macho-") as tmp:
        for info in archive.infolist():
            if info.is_dir():
                continue
            with archive.open(info) as fh:
                if fh.read(4) not in _MAGICS:
                    continue
            target = Path(tmp) / "file"
            target.write_bytes(archive.read(info))
            facts.append(macho_facts(info.filename, target))
    return facts


def _resolves_to_bundled(ref: str, lib: MachOFacts, bundled: set[str]) -> bool:
    """Does ``ref`` (``@loader_path/x`` or ``@rpath/x``) name a file bundled in the wheel?"""
    here = posixpath.dirname(lib.path)
    if ref.startswith("@loader_path/"):
        candidates = [posixpath.normpath(posixpath.join(here, ref.removeprefix("@loader_path/")))]
    elif ref.startswith("@rpath/"):
        rest = ref.removeprefix("@rpath/")
        candidates = [
            posixpath.normpath(posixpath.join(here, r.removeprefix("@loader_path").lstrip("/"), rest))
            for r in lib.rpaths if r.startswith("@loader_path")
        ]
    else:
        return False
    return any(c in bundled for c in candidates)


def check_macos_wheel(wheel: Path, platform: Platform) -> list[MachOFacts]:
    """Raise RepairError unless every Mach-O in ``wheel`` is what ``platform`` promises; return the facts."""
    name = wheel.name
    if not name.endswith(f"-{platform.wheel_platform}.whl"):
        raise RepairError(f"{name}: tag is not {platform.wheel_platform}")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    strays = sorted({n.split("/")[0] for n in names
                     if not n.startswith(_PACKAGE_DIRS) and ".dist-info/" not in n})
    if strays:
        raise RepairError(f"{name}: holds files outside the llama_cpp package: {', '.join(strays)}")
    libraries = wheel_machos(wheel)
    if not libraries:
        raise RepairError(f"{name}: contains no Mach-O library; the build installed nothing")
    bundled = {lib.path for lib in libraries}
    expected = platform.deployment_target
    for lib in libraries:
        if set(lib.archs) != {"ARM64"}:
            raise RepairError(f"{name}: {lib.path} is {'+'.join(lib.archs)}, not arm64 only")
        if expected and set(lib.minos) != {expected}:
            raise RepairError(f"{name}: {lib.path} needs macOS {'/'.join(lib.minos)}, but the wheel tag "
                              f"promises {expected} (MACOSX_DEPLOYMENT_TARGET)")
        for rpath in lib.rpaths:
            if not rpath.startswith("@loader_path"):
                raise RepairError(f"{name}: {lib.path} has LC_RPATH {rpath}: a build-machine path, "
                                  "not @loader_path")
        for ref in lib.dylibs:
            if ref.startswith(_SYSTEM_PREFIXES):
                continue
            if not _resolves_to_bundled(ref, lib, bundled):
                raise RepairError(f"{name}: {lib.path} loads {ref}, which is neither a system library "
                                  f"(/usr/lib, /System) nor bundled in the wheel via @rpath/@loader_path")
    return libraries


def describe(libraries: list[MachOFacts]) -> str:
    lines = []
    for lib in libraries:
        system = [PurePosixPath(d).name for d in lib.dylibs if d.startswith(_SYSTEM_PREFIXES)]
        bundled = [d for d in lib.dylibs if not d.startswith(_SYSTEM_PREFIXES)]
        lines.append(f"{lib.path}: {'+'.join(lib.archs)} minos {'/'.join(lib.minos)} "
                     f"rpath {list(lib.rpaths)} bundled {bundled} system {system}")
    return "\n".join(lines)
