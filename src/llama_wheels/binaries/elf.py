"""What an ELF shared library needs (DT_NEEDED, RUNPATH, symbol versions, program interpreter), read with
pyelftools; and the same for every library of a wheel."""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection
from elftools.elf.segments import InterpSegment

_GLIBC = re.compile(r"^GLIBC_(\d+)\.(\d+)(?:\.\d+)?$")


@dataclass(frozen=True, kw_only=True)
class ElfFacts:
    path: str
    machine: str
    needed: tuple[str, ...]
    runpath: tuple[str, ...]
    glibc_max: tuple[int, int]
    # Every symbol version it needs (GLIBC_2.17, GCC_3.0, ...), sorted: musl has none, so a musl library
    # must need none.
    versions: tuple[str, ...] = ()
    interpreter: str | None = None  # PT_INTERP (a shared library normally has none)


@dataclass(frozen=True, kw_only=True)
class WheelFacts:
    wheel: str
    libraries: tuple[ElfFacts, ...]
    glibc_max: tuple[int, int]
    external: tuple[str, ...]  # DT_NEEDED satisfied by the system (allowlisted)
    size: int


def elf_facts(name: str, data: bytes) -> ElfFacts:
    elf = ELFFile(io.BytesIO(data))
    needed: list[str] = []
    runpath: list[str] = []
    glibc = (0, 0)
    versions: set[str] = set()
    interpreter = next((str(seg.get_interp_name()) for seg in elf.iter_segments()
                        if isinstance(seg, InterpSegment)), None)
    for section in elf.iter_sections():
        if isinstance(section, DynamicSection):
            for tag in section.iter_tags():
                kind = tag.entry.d_tag
                if kind == "DT_NEEDED":
                    needed.append(str(getattr(tag, "needed")))  # noqa: B009 (pyelftools sets it dynamically)
                elif kind in ("DT_RUNPATH", "DT_RPATH"):
                    runpath.extend(str(getattr(tag, kind[3:].lower())).split(":"))
        elif isinstance(section, GNUVerNeedSection):
            for _, auxiliaries in section.iter_versions():
                for aux in auxiliaries:
                    versions.add(str(aux.name))
                    match = _GLIBC.match(aux.name)
                    if match:
                        glibc = max(glibc, (int(match[1]), int(match[2])))
    return ElfFacts(path=name, machine=elf["e_machine"], needed=tuple(needed), runpath=tuple(runpath),
                    glibc_max=glibc, versions=tuple(sorted(versions)), interpreter=interpreter)


def inspect_wheel(wheel: Path) -> WheelFacts:
    libraries = []
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if re.search(r"\.so(\.\d+)*$", info.filename):
                libraries.append(elf_facts(info.filename, archive.read(info)))
    bundled = {PurePosixPath(lib.path).name for lib in libraries}
    external = sorted({n for lib in libraries for n in lib.needed if n not in bundled})
    return WheelFacts(
        wheel=wheel.name,
        libraries=tuple(libraries),
        glibc_max=max((lib.glibc_max for lib in libraries), default=(0, 0)),
        external=tuple(external),
        size=wheel.stat().st_size,
    )
