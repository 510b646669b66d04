"""The estimated-cycles method checked on hand-written kernels whose cycles are known, before it is trusted on
ggml's code: ``kernels/validate.S`` (a chain of dependent SDOTs: latency-bound; a stream of independent
SMMLAs: throughput-bound) is compiled by zig, run under the counting qemu on the neoverse-n2 class, counted
per block and priced by ``mca`` exactly as ggml's blocks are; each kernel's estimate must be within
``TOLERANCE`` of its known cycles under every model of build_config/mca.toml.

Known cycles per instruction: the numbers Arm's Software Optimization Guides give for SDOT and SMMLA, as
LLVM's scheduling models carry them (llvm-mca's instruction info for the one instruction): latency 3 on N2,
V1 and V2; two per cycle on N2 (two 128-bit SIMD pipes), four on V1 and V2 (four); a dependent accumulate
waits for the full latency on N2 but only 1 cycle on V1 and V2 (late forwarding of the accumulator). So a
pass of 32 chained SDOTs costs 32 x 3 cycles on N2 and 32 x 1 on V1 and V2, a pass of 32 independent SMMLAs
32 / 2 and 32 / 4. What this checks: that counting blocks, reading and disassembling them, pricing each as a
repeated block and summing count x price recovers a kernel's cycles, loop overhead and the call's own code
included. What it cannot check: that LLVM's model is the real core (see ``mca.LIMITS``).
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.counting import insn_count, mca
from benchmarks.counting.qemu_plugin import CountingQemu
from llama_wheels.config.cpus import Cpu
from llama_wheels.config.mca_spec import McaSpec
from llama_wheels.core import runner
from llama_wheels.core.errors import CommandFailed
from llama_wheels.emulation.qemu import Sysroot

KERNELS = Path(__file__).resolve().parent / "kernels"
PASSES = 100000
OPS_PER_PASS = 32
TOLERANCE = 0.05
CPU = "neoverse-n2"  # has dotprod and i8mm; the kernels are NEON, so every model's CPU can run them
# kernel -> llvm-mca model -> known cycles per SDOT/SMMLA (see the module's docstring)
KNOWN: dict[str, dict[str, float]] = {
    "sdot_chain": {"neoverse-n2": 3.0, "neoverse-v1": 1.0, "neoverse-v2": 1.0},
    "smmla_stream": {"neoverse-n2": 0.5, "neoverse-v1": 0.25, "neoverse-v2": 0.25},
}


@dataclass(frozen=True, kw_only=True)
class Check:
    kernel: str
    model: str
    known: int  # cycles
    estimated: int
    covered: float

    @property
    def error(self) -> float:
        return abs(self.estimated - self.known) / self.known

    @property
    def ok(self) -> bool:
        return self.error <= TOLERANCE


def compile_kernels(dest: Path, source: Path = KERNELS / "validate.S") -> Path:
    """``source`` assembled and linked by zig into an aarch64 shared library at ``dest``/validate.so."""
    out = dest / "validate.so"
    runner.run([sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-linux-gnu.2.17", "-shared", "-nostdlib",
                "-Wl,--build-id=none", "-o", out, source])
    return out


def validate(spec: McaSpec, counting: CountingQemu, sysroot: Sysroot, cpu: Cpu,
             known: dict[str, dict[str, float]] = KNOWN, source: Path = KERNELS / "validate.S") -> list[Check]:
    """Count and price every kernel of ``known`` under every model of ``spec``; one Check each."""
    kernels = list(known)
    with tempfile.TemporaryDirectory(prefix="llama-wheels-mca-validate-") as tmp:
        library = compile_kernels(Path(tmp), source)
        _, counts = insn_count.run_counted(
            counting, sysroot, cpu,
            [str(KERNELS / "validate_guest.py"), str(library), str(PASSES), str(insn_count.MARKER_MAGIC), *kernels],
            out=Path(tmp) / "counts.json", regions=[1 + i for i in range(len(kernels))], timeout=600)
        regions = {k: counts.blocks(1 + i) for i, k in enumerate(kernels)}
        models = tuple(m.name for m in spec.models)
        prices = mca.Pricer(spec=spec, models=models).prepare(regions.values())
    checks = []
    for kernel, blocks in regions.items():
        for model in models:
            if model not in known[kernel]:
                raise CommandFailed(f"no known cycles of {kernel} under {model}; add them to validate.KNOWN")
            estimate = mca.Pricer.estimate(blocks, prices[model])
            checks.append(Check(kernel=kernel, model=model, known=round(PASSES * OPS_PER_PASS * known[kernel][model]),
                                estimated=estimate.cycles, covered=estimate.covered))
    return checks


def report(checks: list[Check]) -> dict[str, Any]:
    return {"passes": PASSES, "ops_per_pass": OPS_PER_PASS, "tolerance": TOLERANCE, "cpu": CPU,
            "all_within_tolerance": all(c.ok for c in checks),
            "checks": [{"kernel": c.kernel, "model": c.model, "known_cycles": c.known, "estimated_cycles": c.estimated,
                        "relative_error": round(c.error, 4), "covered": c.covered} for c in checks]}


def require(checks: list[Check]) -> None:
    """Refuse to price ggml's code with a method that misses a known kernel by more than TOLERANCE."""
    bad = [c for c in checks if not c.ok]
    if bad:
        c = bad[0]
        raise CommandFailed(f"estimated cycles are not trustworthy: {c.kernel} under {c.model} estimated "
                            f"{c.estimated:,} cycles, known {c.known:,} ({c.error:.1%} off, the limit is "
                            f"{TOLERANCE:.0%})")
