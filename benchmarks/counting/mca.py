"""Estimated cycles from exact block counts: the counting plugin reports every translated block's execution
count (``insn_count.Counts.blocks``); the blocks that hold at least ``COVERAGE`` of a region's instructions
are read from the files they ran from, disassembled by LLVM's ``llvm-mc`` and priced by ``llvm-mca`` under a
CPU's scheduling model (build_config/mca.toml pins the LLVM); a region's estimate is the sum over its blocks of
executions x the block's cycles per pass.

A block's cycles per pass are llvm-mca's steady state for that block alone, repeated (``iterations``): the
cycles of a loop body that is one block, which is what the matrix kernels' hot loops are. What the estimate
leaves out, and says so wherever it is reported (``LIMITS``): caches and memory bandwidth (every load hits
L1), branch prediction (no mispredictions, no taken-branch bubbles), dependencies from one block into the next
(a block is priced as if only it ran, back to back), and the front end (decode and fetch beyond the model's
dispatch width). The remaining instructions (at most 1 - COVERAGE) are priced at the covered blocks' average
cycles per instruction. An estimate is not a measured time.

Every price is deterministic (the same blocks, the same LLVM, the same numbers); blocks are deduplicated by
their bytes, so a kernel shared by many regions is priced once per model.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.counting.insn_count import Block
from llama_wheels.config.mca_spec import McaSpec
from llama_wheels.core import runner
from llama_wheels.core.errors import CommandFailed, ToolchainError

COVERAGE = 0.95
INSN_BYTES = 4  # every A64 instruction
LIMITS = ("caches and memory bandwidth (every load hits L1)", "branch prediction (no mispredictions)",
          "dependencies between consecutive blocks (each block is priced alone, back to back)",
          "the front end beyond the model's dispatch width",
          "instructions the model has no scheduling data for (system instructions; skipped, llvm-mca "
          "-skip-unsupported-instructions=lack-sched)",
          "the cost of a call beyond its branch (a call is priced at build_config/mca.toml's call_latency; "
          "the callee's instructions are priced in their own blocks)",
          f"the {1 - COVERAGE:.0%} of instructions outside the priced blocks, at the priced blocks' average "
          "cycles per instruction")
_ENCODING = re.compile(r"//\s*encoding:\s*\[([^\]]*)\]")
_ERROR_LINE = re.compile(r":(\d+):\d+: error:")


@dataclass(frozen=True, kw_only=True)
class Estimate:
    cycles: int  # the region's estimated cycles
    instructions: int  # the region's counted instructions
    covered: float  # share of the instructions in priced blocks
    blocks: int  # priced blocks


def check_llvm(spec: McaSpec) -> None:
    """The pinned llvm-mca and llvm-mc are there and are the pinned release (else exit 1, naming the fix)."""
    for tool in (spec.llvm_mca, spec.llvm_mc):
        if not tool.is_file():
            raise ToolchainError(f"{tool} is missing: estimated cycles need Debian's {spec.package} "
                                 f"{spec.version} ({spec.source.name}); scripts/bootstrap.sh installs it")
    version = runner.run([spec.llvm_mca, "--version"], capture=True)
    if f"version {spec.release}" not in version:
        raise ToolchainError(f"{spec.llvm_mca} is not LLVM {spec.release} ({spec.source.name} pins it): "
                             f"{runner.telling_line(tuple(version.splitlines()))}")


def hot_blocks(blocks: Mapping[Block, int], coverage: float = COVERAGE) -> list[Block]:
    """The fewest blocks, most instructions first, that hold ``coverage`` of the instructions of
    ``blocks`` (block -> executions); ties broken by place, so the choice is deterministic."""
    ordered = sorted(blocks, key=lambda b: (-b.n_insns * blocks[b], b.path, b.offset, b.n_insns))
    total = sum(b.n_insns * n for b, n in blocks.items())
    chosen, held = [], 0
    for block in ordered:
        if held >= coverage * total:
            break
        chosen.append(block)
        held += block.n_insns * blocks[block]
    return chosen


def block_bytes(block: Block) -> bytes | None:
    """The block's instruction bytes, read from the file it ran from; None when it did not run from a
    file (anonymous memory: JIT code, the vDSO) or the file is gone."""
    if not block.path.startswith("/"):
        return None
    try:
        with open(block.path, "rb") as fh:
            fh.seek(block.offset)
            data = fh.read(block.n_insns * INSN_BYTES)
    except OSError:
        return None
    return data if len(data) == block.n_insns * INSN_BYTES else None


def disassemble(spec: McaSpec, code: Mapping[str, bytes]) -> dict[str, list[str]]:
    """Assembly text per block (key -> bytes), from one llvm-mc run over all of them; a block with an
    encoding llvm-mc cannot decode is left out (it stays unpriced)."""
    keys = sorted(code)
    words = [code[k][i:i + INSN_BYTES] for k in keys for i in range(0, len(code[k]), INSN_BYTES)]
    with tempfile.TemporaryDirectory(prefix="llama-wheels-mc-") as tmp:
        source, out = Path(tmp) / "code.txt", Path(tmp) / "code.s"
        source.write_text("\n".join(" ".join(f"0x{b:02x}" for b in w) for w in words) + "\n")
        runner.probe([spec.llvm_mc, "--disassemble", "--show-encoding", "-triple=aarch64", "-mattr=+all",
                      "-o", out, source], capture=False)
        decoded = _decoded(out.read_text() if out.is_file() else "")
    result: dict[str, list[str]] = {}
    at = 0  # index into decoded, which skips the words llvm-mc could not decode
    for key in keys:
        lines, ok = [], True
        for i in range(0, len(code[key]), INSN_BYTES):
            word = code[key][i:i + INSN_BYTES]
            if at < len(decoded) and decoded[at][0] == word:
                lines.append(decoded[at][1])
                at += 1
            else:
                ok = False  # not decoded: this word produced no line
        if ok:
            result[key] = lines
    return result


def _decoded(text: str) -> list[tuple[bytes, str]]:
    out = []
    for line in text.splitlines():
        found = _ENCODING.search(line)
        if found is None:
            continue
        encoding = bytes(int(b, 16) for b in found.group(1).split(","))
        out.append((encoding, line[:found.start()].strip()))
    return out


def price(spec: McaSpec, model: str, asm: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Cycles per pass of each block (key -> assembly lines) under ``model``, from llvm-mca's steady state
    over ``spec.iterations`` passes. A block llvm-mca refuses (an instruction the model's CPU lacks) is left
    out; the run is repeated without it."""
    keys = sorted(asm)
    while keys:
        text: list[str] = []
        first_line: dict[int, str] = {}
        for key in keys:
            first_line[len(text) + 1] = key
            text += [f"# LLVM-MCA-BEGIN {key}", *asm[key], "# LLVM-MCA-END"]
        with tempfile.TemporaryDirectory(prefix="llama-wheels-mca-") as tmp:
            source, out = Path(tmp) / "blocks.s", Path(tmp) / "mca.json"
            source.write_text("\n".join(text) + "\n")
            outcome = runner.probe([spec.llvm_mca, "-mtriple=aarch64", f"-mcpu={model}",
                                    f"-iterations={spec.iterations}",
                                    f"-call-latency={spec.call_latency}", "--json", "-instruction-info=0",
                                    "-skip-unsupported-instructions=lack-sched",
                                    "-resource-pressure=0", "-o", out, source], capture=True)
            if outcome.returncode == 0:
                data = json.loads(out.read_text())
                return {r["Name"]: r["SummaryView"]["TotalCycles"] / r["SummaryView"]["Iterations"]
                        for r in data["CodeRegions"]}
        bad = _failing_blocks(outcome.output, first_line)
        if not bad:
            raise CommandFailed(f"llvm-mca -mcpu={model} failed: {runner.telling_line(outcome.tail)}",
                                tail=outcome.tail)
        keys = [k for k in keys if k not in bad]
    return {}


def _failing_blocks(output: str, first_line: Mapping[int, str]) -> set[str]:
    """The blocks whose lines llvm-mca's assembler rejected (every error it reported)."""
    bad = set()
    for found in _ERROR_LINE.finditer(output):
        line = int(found.group(1))
        starts = [n for n in first_line if n <= line]
        if starts:
            bad.add(first_line[max(starts)])
    return bad


def code_key(data: bytes) -> str:
    return "b" + hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class Pricer:
    """Prices regions' blocks under several models at once; each distinct block is disassembled and priced
    once per model (``prepare`` with every region first, then ``estimate`` each)."""

    spec: McaSpec
    models: tuple[str, ...]

    def prepare(self, regions: Iterable[Mapping[Block, int]]) -> dict[str, dict[Block, float]]:
        """Model -> block -> cycles per pass, for the hot blocks of every region."""
        wanted: set[Block] = set()
        for blocks in regions:
            wanted.update(hot_blocks(blocks))
        code = {b: data for b in sorted(wanted, key=lambda b: (b.path, b.offset, b.n_insns))
                if (data := block_bytes(b)) is not None}
        by_key = {code_key(data): data for data in code.values()}
        asm = disassemble(self.spec, by_key)
        prices: dict[str, dict[Block, float]] = {}
        for model in self.models:
            per_key = price(self.spec, model, asm)
            prices[model] = {b: per_key[k] for b, data in code.items() if (k := code_key(data)) in per_key}
        return prices

    @staticmethod
    def estimate(blocks: Mapping[Block, int], prices: Mapping[Block, float]) -> Estimate:
        """One region's estimate from its blocks (block -> executions) and one model's prices."""
        total = sum(b.n_insns * n for b, n in blocks.items())
        priced = [b for b in hot_blocks(blocks) if b in prices]
        cycles = sum(prices[b] * blocks[b] for b in priced)
        covered = sum(b.n_insns * blocks[b] for b in priced)
        rest = total - covered
        estimate = cycles + (rest * cycles / covered if covered else 0.0)
        return Estimate(cycles=round(estimate), instructions=total,
                        covered=round(covered / total, 4) if total else 0.0, blocks=len(priced))
