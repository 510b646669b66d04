"""Counting a guest's instructions: run the sysroot's Python under the counting qemu (``qemu_plugin``) with
the insn_count plugin, read its JSON, refuse what is not our plugin's complete output, and attribute
instructions to files and symbols.

Regions: the guest marks them with ``write(-1, NULL, MARKER_MAGIC + k)`` (aarch64 syscall 64 through
``ctypes``: EBADF/EFAULT, nothing written; benchmarks/arm_worker.py); the plugin counts instructions per
region k. A run in which an expected marker never
came is an error, never a zero.

Determinism: the guest runs with ASLR off (``setarch -R``: the host's address space layout moves qemu's
guest_base, and with it malloc's and Python's address-dependent paths), a fixed guest random seed (qemu
``-seed``: AT_RANDOM and getrandom) and PYTHONHASHSEED=0. Single-threaded guests then give the same counts
run after run (measured: tests/unit/test_benchmarks.py); several threads do not (ggml's thread pool spins while
it waits, for as long as the host schedules).
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from benchmarks.counting.qemu_plugin import CountingQemu
from llama_wheels.config.cpus import Cpu
from llama_wheels.core import runner
from llama_wheels.core.errors import CommandFailed, LlamaWheelsError
from llama_wheels.emulation.qemu import Sysroot, run_guest

TOOL = "llama-wheels insn_count"
MARKER_MAGIC = 0x4C57A000  # as in plugins/insn_count.c
MAX_REGIONS = 64  # as in plugins/insn_count.c


class CountError(LlamaWheelsError):
    """A counted run that cannot be trusted: not our plugin's output, a missing marker, a lost block."""


@dataclass(frozen=True, kw_only=True)
class Counts:
    total: int
    regions: Mapping[int, int]  # region -> instructions
    markers: Mapping[int, int]  # region -> how many markers opened it
    vcpus: int
    files: tuple[str, ...]
    profile: tuple[tuple[int, int, int, int], ...]  # (region, file index, file offset of a block, instructions)

    def region(self, k: int) -> int:
        return self.regions.get(k, 0)


def read_counts(path: Path, *, source_sha256: str, regions: Sequence[int] = ()) -> Counts:
    """The plugin's JSON at ``path``, refused unless our plugin (compiled from ``source_sha256``) wrote it,
    no block went uncounted, and each of ``regions`` was opened by exactly one marker."""
    if not path.is_file():
        raise CountError(f"{path}: the counting plugin wrote no output (did the guest exit normally?)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CountError(f"{path}: not the plugin's JSON ({exc}); a truncated or foreign file") from None
    if data.get("tool") != TOOL or data.get("source_sha256") != source_sha256:
        raise CountError(f"{path}: written by {data.get('tool')!r} from source {data.get('source_sha256')}, "
                         f"not by {TOOL!r} from this checkout's source ({source_sha256[:12]}); rebuild the plugin")
    if data.get("marker_magic") != MARKER_MAGIC:
        raise CountError(f"{path}: marker magic {data.get('marker_magic')} is not {MARKER_MAGIC}; "
                         "plugin and reader disagree")
    if data["slot_overflow"]:
        raise CountError(f"{path}: {data['slot_overflow']} block executions had no profile slot; "
                         "raise MAX_SLOTS in insn_count.c")
    counted = {int(k): v for k, v in data["regions"].items()}
    for k in regions:
        seen = counted.get(k, {}).get("markers", 0)
        if seen != 1:
            raise CountError(f"{path}: region {k} was opened by {seen} markers, not 1: the guest did not mark "
                             "it (a marker-less run counts nothing)")
    total = sum(r["insns"] for r in counted.values())
    if total != data["total"]:
        raise CountError(f"{path}: regions sum to {total}, the total is {data['total']}")
    return Counts(
        total=data["total"],
        regions={k: r["insns"] for k, r in counted.items()},
        markers={k: r["markers"] for k, r in counted.items()},
        vcpus=data["vcpus"],
        files=tuple(data["files"]),
        profile=tuple((int(r), int(f), int(o), int(n)) for r, f, o, n in data["profile"]),
    )


def run_counted(
    counting: CountingQemu,
    sysroot: Sysroot,
    cpu: Cpu,
    args: Sequence[str],
    *,
    out: Path,
    regions: Sequence[int],
    env: Mapping[str, str] | None = None,
    pythonpath: Sequence[Path] = (),
    cwd: Path | None = None,
    timeout: float = 1800,
) -> tuple[runner.Outcome, Counts]:
    """Run the sysroot's python ``args`` on ``cpu`` under the counting qemu; its output and its counts.

    The guest must exit 0 and open each of ``regions`` once; anything else is an error.
    """
    if "," in os.fspath(out) or "," in os.fspath(counting.plugin):
        raise CountError(f"{out} / {counting.plugin}: qemu's -plugin option cannot take a path with a comma")
    out.unlink(missing_ok=True)
    outcome = run_guest(
        sysroot.root,
        sysroot.python,
        cpu.qemu_cpu,
        list(args),
        qemu=counting.qemu,
        env={"PYTHONHASHSEED": "0", **(env or {})},
        pythonpath=[*pythonpath, sysroot.site],
        cwd=cwd,
        timeout=timeout,
        qemu_args=["-seed", "1", "-plugin", f"{counting.plugin},out={out}"],
        prefix=["setarch", "-R"],
    )
    if outcome.returncode != 0:
        how = outcome.signal_name or f"exit {outcome.returncode}"
        raise CommandFailed(f"counted guest run on {cpu.name} failed ({how}): {runner.telling_line(outcome.tail)}",
                            tail=outcome.tail)
    return outcome, read_counts(out, source_sha256=counting.source_sha256, regions=regions)


# -- attribution ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Symbols:
    segments: tuple[tuple[int, int, int], ...]  # (file offset, size, vaddr) of each PT_LOAD
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    names: tuple[str, ...]

    def at(self, offset: int) -> str | None:
        vaddr = next((offset - off + va for off, size, va in self.segments if off <= offset < off + size), None)
        if vaddr is None:
            return None
        i = bisect.bisect_right(self.starts, vaddr) - 1
        return self.names[i] if i >= 0 and vaddr < self.ends[i] else None


@lru_cache(maxsize=64)
def _symbols(path: str) -> _Symbols | None:
    """Function symbols of the ELF file at ``path`` (.symtab, else .dynsym); None for a non-ELF."""
    try:
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            segments = tuple((seg["p_offset"], seg["p_filesz"], seg["p_vaddr"])
                             for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD")
            functions: dict[int, tuple[int, str]] = {}
            for name in (".symtab", ".dynsym"):
                table = elf.get_section_by_name(name)
                if not isinstance(table, SymbolTableSection):
                    continue
                for sym in table.iter_symbols():
                    if sym["st_info"]["type"] == "STT_FUNC" and sym["st_value"] and sym.name:
                        functions.setdefault(sym["st_value"], (sym["st_size"], sym.name))
    except (OSError, ELFError):
        return None
    ordered = sorted(functions.items())
    return _Symbols(segments, tuple(a for a, _ in ordered), tuple(a + max(s, 1) for a, (s, _) in ordered),
                    tuple(n for _, (_, n) in ordered))


def attribute(counts: Counts, region: int) -> dict[tuple[str, str | None], int]:
    """Instructions of ``region`` per (file, function symbol or None), from the plugin's per-block profile
    (a block is attributed to the function of its first instruction)."""
    out: dict[tuple[str, str | None], int] = {}
    for r, file_index, offset, insns in counts.profile:
        if r != region:
            continue
        path = counts.files[file_index]
        table = _symbols(path) if path.startswith("/") else None
        key = (path, table.at(offset) if table else None)
        out[key] = out.get(key, 0) + insns
    return out


def shares(counts: Counts, region: int, classify: Callable[[str, str | None], str]) -> dict[str, float]:
    """The share of ``region``'s instructions per class (``classify(file, symbol)``), largest first."""
    by_class: dict[str, int] = {}
    for (path, symbol), insns in attribute(counts, region).items():
        name = classify(path, symbol)
        by_class[name] = by_class.get(name, 0) + insns
    total = sum(by_class.values()) or 1
    return {k: round(v / total, 4) for k, v in sorted(by_class.items(), key=lambda kv: -kv[1])}


def top_symbols(counts: Counts, region: int, n: int = 10) -> list[dict[str, Any]]:
    attributed = attribute(counts, region)
    total = sum(attributed.values()) or 1
    best = sorted(attributed.items(), key=lambda kv: -kv[1])[:n]
    return [{"file": Path(path).name, "symbol": symbol, "share": round(insns / total, 4)}
            for (path, symbol), insns in best]
