"""Stage ``verify``: a repaired wheel imports and generates text on an emulated ARM CPU.

The smoke test of a build: install the wheel into a private site directory, write a tiny Q4_0 model,
and run a short greedy generation with the emulated arm64 Python on one CPU (neoverse-n1 by default,
a Graviton2/Ampere class machine). The full CPU matrix with the wheel test suite is ``llama-wheels
test``; this stage only proves that what goes to dist/ runs at all.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llama_wheels.config.cpus import Cpu
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import VerifyError
from llama_wheels.core.runner import telling_line
from llama_wheels.testbed.models import SPECS, write_model
from llama_wheels.testbed.qemu import install_wheel, require_qemu, run_python
from llama_wheels.testbed.sysroot import ensure_sysroot

SMOKE_CPU = "neoverse-n1"
# Platforms whose wheels the emulated test bed (qemu-aarch64 + an arm64 sysroot) can run.
EMULATED_PLATFORMS = ("linux-aarch64",)

_SMOKE = """\
import importlib.util, json, sys
import llama_cpp
from llama_cpp import Llama
if importlib.util.find_spec("llama_cpp.diagnostics"):
    from llama_cpp import diagnostics
else:  # a wheel without the llama-wheels patches (e.g. pin legacy-unpatched)
    diagnostics = None
llm = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, seed=0, verbose=False)
tokens = []
for token in llm.generate([1, 100, 101, 102], top_k=1, temp=0.0):
    tokens.append(int(token))
    if len(tokens) == 8:
        break
info = diagnostics.collect() if diagnostics else {"variant": None, "q4_0_repack_layout": "unknown"}
print("SMOKE " + json.dumps({"tokens": tokens, "variant": info["variant"],
                             "layout": info["q4_0_repack_layout"], "version": llama_cpp.__version__,
                             "package": llama_cpp.__file__}))
"""


@dataclass(frozen=True, kw_only=True)
class SmokeResult:
    cpu: str
    tokens: tuple[int, ...]
    variant: str | None
    layout: str
    package: Path  # where the emulated Python imported llama_cpp from (its __init__.py)
    seconds: float


def smoke_test(wheel: Path, cpu: Cpu, cache: Cache) -> SmokeResult:
    """Run ``wheel`` on emulated ``cpu``; raise VerifyError with a clear verdict if it does not work."""
    with tempfile.TemporaryDirectory(prefix="llama-wheels-verify-") as scratch:
        site = install_wheel(wheel, Path(scratch) / "site")
        return run_smoke(site, cpu, cache, label=wheel.name)


def run_smoke(site: Path, cpu: Cpu, cache: Cache, *, label: str) -> SmokeResult:
    """The smoke run with llama_cpp from ``site`` (however it was installed there) on emulated ``cpu``."""
    sysroot = ensure_sysroot(cache)
    with tempfile.TemporaryDirectory(prefix="llama-wheels-smoke-") as scratch:
        model = write_model(SPECS["q4_0"], Path(scratch) / "q4_0.gguf")
        outcome = run_python(sysroot, cpu, ["-c", _SMOKE, str(model)], pythonpath=[site], timeout=600)
    if outcome.signal_name:
        raise VerifyError(f"{label} died of {outcome.signal_name} on {cpu.name} ({cpu.description})")
    lines = [line for line in outcome.tail if line.startswith("SMOKE ")]
    if outcome.returncode != 0 or not lines:
        raise VerifyError(f"{label} failed on {cpu.name}: {telling_line(outcome.tail)}")
    data = json.loads(lines[-1].removeprefix("SMOKE "))
    if len(data["tokens"]) != 8:
        raise VerifyError(f"{label} on {cpu.name}: generated {len(data['tokens'])} tokens, expected 8")
    return SmokeResult(cpu=cpu.name, tokens=tuple(data["tokens"]), variant=data["variant"],
                       layout=data["layout"], package=Path(data["package"]), seconds=outcome.seconds)


@dataclass(frozen=True)
class SmokeVerifier:
    """The build's verify stage (``pipeline.Verifier``): the smoke test on one emulated CPU."""

    cpu: Cpu
    cache: Cache
    platforms: tuple[str, ...] = EMULATED_PLATFORMS

    @property
    def where(self) -> str:
        return self.cpu.name

    def preflight(self) -> None:
        require_qemu()

    def verify(self, wheel: Path) -> str:
        result = smoke_test(wheel, self.cpu, self.cache)
        return (f"CPU variant {result.variant}, Q4_0 repack {result.layout}, "
                f"greedy tokens {list(result.tokens)} on emulated {self.cpu.name}")
