"""Stage ``verify``: a repaired wheel imports and generates text on an emulated ARM CPU.

The smoke test of a build: install the wheel into a private site directory, write a tiny Q4_0 model,
and run a short greedy generation with the emulated arm64 Python on one CPU (neoverse-n1 by default,
a Graviton2/Ampere class machine). Then judge it with the oracle (``llama_wheels.oracle``): the CPU variant
ggml loaded and every weight's repack layout must be the ones ggml's rules give for this CPU, or the
build fails and nothing reaches dist/. The full CPU matrix with the wheel test suite is ``llama-wheels
test``.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llama_wheels import oracle
from llama_wheels.binaries.record import built_as, require_record
from llama_wheels.config.cpus import Cpu
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import VerifyError
from llama_wheels.core.runner import telling_line
from llama_wheels.emulation.beds import bed_for_wheel
from llama_wheels.emulation.guest import reported
from llama_wheels.emulation.qemu import Sysroot, ensure_qemu, install_wheel, run_python
from llama_wheels.emulation.sysroot import ensure_sysroot
from llama_wheels.judges.matrix import expectation_for
from llama_wheels.standalone.models import SPECS, weight_tensors, write_model

SMOKE_MODEL = "q4_0"  # every weight's row count a multiple of 8: each Q4_0 layout takes them all
# Platforms whose wheels the emulated test bed (qemu-aarch64 + an arm64 sysroot) can run.
EMULATED_PLATFORMS = ("linux-aarch64", "linux-aarch64-musl")  # the glibc and the musl bed (emulation/beds.py)

# verbose=True: llama-cpp-python's log callback then passes ggml's DEBUG lines on, among them one
# "repack: repack tensor NAME with LAYOUT" per repacked weight, which the host reads from the output.
_SMOKE = """\
import importlib.util, json, sys
import llama_cpp
from llama_cpp import Llama
if importlib.util.find_spec("llama_cpp.diagnostics"):
    from llama_cpp import diagnostics
else:  # a wheel without the llama-wheels patches (e.g. pin legacy-unpatched)
    diagnostics = None
llm = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, seed=0, verbose=True)
tokens = []
for token in llm.generate([1, 100, 101, 102], top_k=1, temp=0.0):
    tokens.append(int(token))
    if len(tokens) == 8:
        break
info = diagnostics.collect() if diagnostics else {"variant": None}
system_info = llama_cpp.llama_print_system_info()
print("SMOKE " + json.dumps({"tokens": tokens, "variant": info["variant"], "version": llama_cpp.__version__,
                             "system_info": system_info.decode(errors="replace"),
                             "package": llama_cpp.__file__}))
"""


@dataclass(frozen=True, kw_only=True)
class SmokeResult:
    cpu: str
    tokens: tuple[int, ...]
    variant: str | None
    repacked: Mapping[str, str]  # tensor -> layout, as ggml logged it while loading the model
    generation: str | None  # the wheel's repack code (oracle.repack_generation), None: built without
    package: Path  # where the emulated Python imported llama_cpp from (its __init__.py)
    seconds: float

    @property
    def layout(self) -> str:
        """The layouts the model's weights were repacked into (``q4_0_4x4``), or ``none``."""
        return oracle.layout_summary(self.repacked)


def smoke_test(wheel: Path, cpu: Cpu, cache: Cache) -> SmokeResult:
    """Run ``wheel`` on emulated ``cpu``; raise VerifyError with a clear verdict if it does not work."""
    with tempfile.TemporaryDirectory(prefix="llama-wheels-verify-") as scratch:
        site = install_wheel(wheel, Path(scratch) / "site")
        return run_smoke(site, cpu, cache, label=wheel.name, sysroot=bed_for_wheel(wheel, cache))


def run_smoke(site: Path, cpu: Cpu, cache: Cache, *, label: str, model: Path | None = None,
              sysroot: Sysroot | None = None) -> SmokeResult:
    """The smoke run with llama_cpp from ``site`` (however it was installed there) on emulated ``cpu``:
    load ``model`` (default: the tiny ``q4_0`` model), generate 8 greedy tokens, read what was repacked.
    ``sysroot``: the bed to run in (default: the glibc bed)."""
    sysroot = sysroot or ensure_sysroot(cache)
    with tempfile.TemporaryDirectory(prefix="llama-wheels-smoke-") as scratch:
        model = model or write_model(SPECS[SMOKE_MODEL], Path(scratch) / f"{SMOKE_MODEL}.gguf")
        outcome = run_python(sysroot, cpu, ["-c", _SMOKE, str(model)], pythonpath=[site], timeout=600)
    if outcome.signal_name:
        raise VerifyError(f"{label} died of {outcome.signal_name} on {cpu.name} ({cpu.description})")
    # The whole output, not its tail: with verbose=True ggml may log more once the script has printed.
    found = reported(outcome.output.splitlines(), "SMOKE")
    if outcome.returncode != 0 or not found:
        raise VerifyError(f"{label} failed on {cpu.name}: {telling_line(outcome.tail)}")
    data = found[-1]
    if len(data["tokens"]) != 8:
        raise VerifyError(f"{label} on {cpu.name}: generated {len(data['tokens'])} tokens, expected 8")
    try:
        repacked = oracle.repacked_tensors(outcome.output)
    except oracle.OracleError as exc:
        raise VerifyError(f"{label} on {cpu.name}: {exc}") from None
    return SmokeResult(cpu=cpu.name, tokens=tuple(data["tokens"]), variant=data["variant"], repacked=repacked,
                       generation=oracle.repack_generation(data["system_info"]), package=Path(data["package"]),
                       seconds=outcome.seconds)


def judge(result: SmokeResult, expectation: oracle.Expectation, *, label: str) -> None:
    """Raise VerifyError unless the smoke run of the ``SMOKE_MODEL`` shows the CPU variant and, weight by
    weight, the repacking the oracle expects (at least one repacked weight wherever a layout is expected)."""
    where = f"{label} on {result.cpu}"
    if not expectation.supported:
        raise VerifyError(f"{where}: the wheel cannot run on this CPU (it lacks {', '.join(expectation.missing)}), "
                          "yet it did; its CPU check is broken")
    if expectation.code is None:
        raise VerifyError(f"{where}: the wheel records neither CPU variants nor cpu-isa.txt, so nothing says "
                          "which variant and repack layout it must show; build it with --no-verify")
    wanted = {t.name: layout for t in weight_tensors(SPECS[SMOKE_MODEL]) if t.is_matmul_weight
              and (layout := expectation.layout(t.ggml_type, t.ne1, result.generation or "repack")) is not None}
    expected_layout = expectation.q4_0_layout
    if (expectation.variant is not None and result.variant != expectation.variant) or result.repacked != wanted \
            or (expected_layout != "none" and not result.repacked):
        raise VerifyError(
            f"{where}: loaded CPU variant {result.variant}, expected {expectation.variant}; Q4_0 repack "
            f"{result.layout} ({len(result.repacked)} tensors), expected {expected_layout} ({len(wanted)} tensors)"
            + ("" if result.generation else "; the wheel was built without repacking (no REPACK = 1)"))


def judge_id() -> str:
    """Names the rules a smoke run is judged by (this module and the oracle): a verification recorded
    in the finished-wheel store under other rules does not count."""
    digest = hashlib.sha256()
    for module in (oracle.__file__, __file__):
        digest.update(Path(module).read_bytes())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class SmokeVerifier:
    """The build's verify stage (``pipeline.Verifier``): the smoke test on one emulated CPU, judged by the
    oracle against what the wheel's record says it was built to be."""

    cpu: Cpu
    cache: Cache
    platforms: tuple[str, ...] = EMULATED_PLATFORMS

    @property
    def where(self) -> str:
        return f"{self.cpu.name}, rules {judge_id()}"

    def preflight(self) -> None:
        ensure_qemu(self.cache)

    def verify(self, wheel: Path, source_tree: Path) -> str:
        build, declared = intended_build(wheel)
        expectation = expectation_for(build, self.cpu, declared, label=wheel.name)
        result = smoke_test(wheel, self.cpu, self.cache)
        judge(result, expectation, label=wheel.name)
        return (f"CPU variant {result.variant}, Q4_0 repack {result.layout} in {len(result.repacked)} tensors "
                f"(as the oracle expects), greedy tokens {list(result.tokens)} on emulated {self.cpu.name}")


def intended_build(wheel: Path) -> tuple[oracle.Build, Mapping[str, frozenset[str]]]:
    """What ``wheel`` was meant to be, from its record, not from what it happens to contain (a dispatch wheel
    that lost variant libraries must fail), and the CPU variants it was built to hold."""
    built = built_as(require_record(wheel, "what it was built for (verify only wheels `llama-wheels build` wrote)"))
    return built.build, built.variants
