"""``llama-wheels inspect WHEEL``: what a wheel is, from the wheel alone.

Prints the provenance record (``llama_wheels.json``), the wheel's tags (its WHEEL file), every bundled
shared library with its architecture and what it needs, the CPU variants it ships (or the one fixed ISA
it was built for), and the platform floor: the highest GLIBC symbol version any ELF library needs, or
for macOS wheels the Mach-O ``minos`` (LC_BUILD_VERSION / LC_VERSION_MIN_MACOSX) of each library.
"""

from __future__ import annotations

import json
import re
import zipfile
from email.parser import HeaderParser
from pathlib import Path, PurePosixPath
from typing import Any

from llama_wheels.binaries.elf import elf_facts
from llama_wheels.binaries.macho import UNKNOWN_MINOS, is_macho, macho_facts
from llama_wheels.binaries.record import FILENAME, Record, read_record
from llama_wheels.binaries.wheel import CPU_ISA, cpu_variants, fixed_isa, libc_of_tag
from llama_wheels.core.cache import sha256_file
from llama_wheels.core.errors import RepairError, UserError

_LIBRARY = re.compile(r"\.(so(\.\d+)*|dylib)$")


def _wheel_tags(archive: zipfile.ZipFile, dist_info: str) -> list[str]:
    wheel_file = HeaderParser().parsestr(archive.read(f"{dist_info}/WHEEL").decode())
    return wheel_file.get_all("Tag") or []


def _macho_slices(name: str, data: bytes) -> list[dict[str, Any]]:
    """One entry per architecture slice of the Mach-O file ``name``; format "unknown" if it is none."""
    try:
        facts = macho_facts(name, data) if is_macho(data) else None
    except RepairError:
        facts = None
    if facts is None:
        return [{"path": name, "format": "unknown"}]
    return [{"path": name, "format": "Mach-O", "arch": arch.lower(),
             "minos": None if minos == UNKNOWN_MINOS else minos, "dylibs": list(facts.dylibs),
             "rpaths": list(facts.rpaths)}
            for arch, minos in zip(facts.archs, facts.minos, strict=True)]


def inspect(wheel: Path) -> dict[str, Any]:
    """Everything ``llama-wheels inspect`` reports, as plain data."""
    if not wheel.is_file() or wheel.suffix != ".whl":
        raise UserError(f"{wheel}: not a wheel file; pass a .whl that `llama-wheels build` wrote")
    record = read_record(wheel)
    libraries: list[dict[str, Any]] = []
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            dist_infos = sorted({n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")})
            if len(dist_infos) != 1:
                raise UserError(f"{wheel.name}: expected one .dist-info directory, found {len(dist_infos)}")
            tags = _wheel_tags(archive, dist_infos[0])
            isa = fixed_isa(archive)
            for name in sorted(n for n in names if _LIBRARY.search(n)):
                data = archive.read(name)
                if data.startswith(b"\x7fELF"):
                    facts = elf_facts(name, data)
                    glibc = ".".join(map(str, facts.glibc_max)) if facts.glibc_max > (0, 0) else None
                    libraries.append({"path": name, "format": "ELF", "machine": facts.machine, "glibc": glibc,
                                      "needed": list(facts.needed), "runpath": list(facts.runpath)})
                else:
                    libraries += _macho_slices(name, data)
    except zipfile.BadZipFile as exc:
        raise UserError(f"{wheel}: unreadable as a zip archive ({exc})") from None
    floors = [tuple(int(x) for x in lib["glibc"].split(".")) for lib in libraries if lib.get("glibc")]
    minos = sorted({lib["minos"] for lib in libraries if lib.get("minos")},
                   key=lambda v: tuple(int(x) for x in v.split(".")))
    return {
        "wheel": wheel.name,
        "sha256": sha256_file(wheel),
        "size": wheel.stat().st_size,
        "tags": tags,
        "libc": _libc(tags),
        "requires_glibc": ".".join(map(str, max(floors))) if floors else None,
        "macos_minos": minos[-1] if minos else None,
        "cpu_variants": cpu_variants(names),
        "fixed_isa": isa,
        "libraries": libraries,
        "provenance": None if record is None else record.to_data(),
    }


def _libc(tags: list[str]) -> str | None:
    """The C library a Linux wheel's tags promise: ``glibc`` (manylinux), ``musl`` (musllinux), else None."""
    kinds = {libc_of_tag(tag.split("-")[-1]) for tag in tags} - {None}
    return kinds.pop() if len(kinds) == 1 else None


def _needs(lib: dict[str, Any]) -> str:
    if lib["format"] == "ELF":
        floor = f"GLIBC {lib['glibc']}" if lib["glibc"] else "no GLIBC versions"
        return (f"{lib['machine'].removeprefix('EM_').lower()}, needs {floor}; "
                f"NEEDED {', '.join(lib['needed']) or '-'}; RUNPATH {':'.join(lib['runpath']) or '-'}")
    if lib["format"] == "Mach-O":
        return (f"{lib['arch']}, minos {lib['minos'] or '?'}; links {', '.join(lib['dylibs']) or '-'}; "
                f"rpath {':'.join(lib['rpaths']) or '-'}")
    return "not ELF or Mach-O"


def render(facts: dict[str, Any]) -> str:
    """The human-readable report of ``inspect``."""
    lines = [f"wheel     {facts['wheel']}", f"sha256    {facts['sha256']}",
             f"size      {facts['size']} bytes", "tags      " + ", ".join(facts["tags"])]
    if facts["libc"] == "musl":
        lines.append("requires  musl libc (musllinux: Alpine); no library needs a versioned symbol"
                     if not facts["requires_glibc"] else
                     f"requires  musl libc (musllinux), YET a library needs GLIBC {facts['requires_glibc']}")
    if facts["requires_glibc"]:
        lines.append(f"requires  GLIBC >= {facts['requires_glibc']} "
                     "(highest symbol version any library needs)")
    if facts["macos_minos"]:
        lines.append(f"requires  macOS >= {facts['macos_minos']} (highest minos of any library)")
    if facts["cpu_variants"]:
        lines.append("cpu       runtime dispatch over " + ", ".join(facts["cpu_variants"]))
    elif facts["fixed_isa"]:
        lines.append(f"cpu       fixed ISA {facts['fixed_isa']} ({CPU_ISA})")
    lines.append(f"libraries ({len(facts['libraries'])})")
    lines += [f"  {PurePosixPath(lib['path']).name:<28} {_needs(lib)}" for lib in facts["libraries"]]
    if facts["provenance"] is None:
        lines.append(f"provenance: none ({FILENAME} missing: not built by llama-wheels)")
        return "\n".join(lines)
    record = Record.from_data(facts["provenance"], where=facts["wheel"])
    versions = record.toolchain.versions
    lines += [
        f"provenance ({FILENAME})",
        f"  pin        {record.pin.name}: llama-cpp-python {record.pin.llama_cpp_python}, "
        f"llama.cpp {record.pin.llama_cpp_commit}",
        f"  sdist      {record.pin.sdist.filename} sha256 {record.pin.sdist.sha256}",
        *(f"  patch      {p.name} sha256 {p.sha256}" for p in record.patches),
        f"  target     {record.target.name} ({record.target.platform}, index {record.target.index})",
        f"  compiler   zig {versions.get('zig', 'unknown')} ({versions.get('compiler', 'unknown')}) "
        f"-target {record.toolchain.zig_target}",
        "  tools      " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())
                                     if k not in ("zig", "compiler")),
        f"  built by   llama-wheels {record.llama_wheels.version} "
        f"(stage code sha256 {record.llama_wheels.stage_code_sha256[:16]})",
        f"  date       {record.build.date} (SOURCE_DATE_EPOCH {record.build.source_date_epoch}, "
        f"from {record.build.source_date_epoch_from})",
        "  config settings (scikit-build-core -C, exactly as passed; "
        "paths of the build machine as placeholders)",
        *(f"    {s}" for s in record.cmake.config_settings),
        "  environment " + " ".join(f"{k}={v}" for k, v in sorted(record.cmake.environment.items())),
    ]
    return "\n".join(lines)


def to_json(facts: dict[str, Any]) -> str:
    return json.dumps(facts, indent=2, sort_keys=True)
