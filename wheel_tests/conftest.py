"""Fixtures for the wheel suite: tiny models, their probe runs in a child process (a model that crashes it fails
alone), the result file.

This suite tests an *installed* llama-cpp-python (``import llama_cpp``); it never imports the
``llama_wheels`` package except its standalone modules ``models`` (the tiny models) and ``oracle`` (ggml's
variant and repack rules), each found in this order (``wheel_probe.standalone``):

1. the file named by ``LLAMA_WHEELS_MODELS_PY`` / ``LLAMA_WHEELS_ORACLE_PY`` (the emulated matrix points
   them at the checkout's copies);
2. ``llama_wheels.standalone.models`` / ``llama_wheels.oracle`` if ``llama_wheels`` is importable;
3. ``models.py`` / ``oracle.py`` copied next to these tests;
4. ``../src/llama_wheels/standalone/models.py`` / ``../src/llama_wheels/oracle.py`` from a checkout of this repository
   (how cibuildwheel runs it).

Environment:

- ``LLAMA_WHEELS_EXPECT_LAYOUT``: ``q4_0_4x4`` | ``q4_0_4x8`` | ``q4_0_8x8`` | ``none`` - the Q4_0 layout this
  CPU must get; unset = only checks that hold on every CPU.
- ``LLAMA_WHEELS_EXPECT_VARIANT``: the CPU variant ggml must load on this machine (CI sets it where it knows
  the runner's hardware: ``apple_m1`` on macos-14); it must equal the derived one wherever that can be derived.
- ``LLAMA_WHEELS_RESULT``: write the observed facts (system info, repacked tensors, tokens, first logits
  per model and per load mode) to this JSON file at the end of the session.
- ``LLAMA_WHEELS_PROBE_PYTHON``: command (shell-split) that runs a Python with the wheel installed, for the
  child that probes the models (all of them in one, in order; one that kills it is failed with the signal and
  the rest go on in a new child), or ``in-process``. Default: ``sys.executable``; a usage error if that cannot be
  executed (an aarch64 Python run through ``qemu-aarch64-static`` without binfmt_misc): nothing falls back to
  another way of probing unasked. In-process, a crash ends the session instead of failing one model. Under
  qemu with binfmt_misc, a child would run on qemu's default CPU, not the ``-cpu`` of the parent: pass the full
  qemu command line here (the host binary can be executed from inside the emulated process; the emulated
  matrix does), set ``QEMU_CPU``, or use ``in-process``.
- ``LLAMA_WHEELS_PROBE_TIMEOUT``: seconds per model probe (default 900; emulation is slow); a child probing n
  models has n times that.
- ``LLAMA_WHEELS_MODEL_CACHE``: directory where models made by the wheel's quantizer are kept, by content
  (the F32 source's sha256, the file type and the llama_cpp version); the emulated matrix shares one across
  its cells. Unset: a fresh directory per session.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # --import-mode=importlib does not add it
    sys.path.insert(0, str(HERE))

import wheel_probe  # noqa: E402


def load_models_module() -> tuple[ModuleType, str]:
    """The standalone models module and where it came from (``wheel_probe.standalone``)."""
    return wheel_probe.standalone("models")


def pytest_configure(config: pytest.Config) -> None:
    """Fail the session once, clearly, on a bad environment instead of erroring every test."""
    try:
        load_models_module()
        wheel_probe.oracle()
        wheel_probe.env_layout()
    except (ValueError, ImportError, OSError) as exc:
        raise pytest.UsageError(str(exc)) from None


@dataclass(frozen=True)
class ProbeOutcome:
    """A model's probe: the JSON result, or why there is none."""

    spec: str
    result: dict[str, Any] | None
    failure: str | None  # e.g. "died with signal SIGILL"
    log: str  # child's stderr (llama.cpp log echo); empty for in-process probes
    cannot_hold: str | None = None  # why this wheel's ggml cannot load the model at all (a type it lacks)
    binding_required: bool = True  # the wheel's release must bind every type (wheel_probe.binding_required)
    signal: str | None = None  # the signal the child died of (SIGILL: code the CPU lacks), for the matrix

    def require(self, *phases: str) -> dict[str, Any]:
        """The result, failing the test if the probe crashed or one of ``phases`` raised; skipping it only
        where the wheel's ggml predates a type of the model (a release older than the oracle's types)."""
        if self.cannot_hold is not None:
            if self.binding_required:
                pytest.fail(f"{self.cannot_hold}, yet its release must bind every type of oracle.GGML_TYPES "
                            f"(from {wheel_probe.oracle().TYPES_RELEASE} on): a binding was lost")
            pytest.skip(self.cannot_hold)
        if self.result is None:
            tail = "\n".join(self.log.splitlines()[-40:])
            pytest.fail(f"probe of model {self.spec} {self.failure}; last log lines:\n{tail}")
        errors = {p: self.result["errors"][p] for p in phases if p in self.result["errors"]}
        if errors:
            pytest.fail(f"probe of model {self.spec} failed: {errors}")
        return self.result


@functools.cache
def _probe_command() -> list[str] | None:
    """Interpreter command for child probes, or None to probe in-process (see the module docstring)."""
    env = os.environ.get("LLAMA_WHEELS_PROBE_PYTHON", "").strip()
    if env == "in-process":
        return None
    cmd = shlex.split(env) or [sys.executable]
    try:
        subprocess.run([*cmd, "-c", "pass"], check=True, capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        raise pytest.UsageError(f"LLAMA_WHEELS_PROBE_PYTHON={env or shlex.join(cmd)!r} does not run ({exc}); "
                                "set it to a command that runs this Python (under qemu: its command line with "
                                "-cpu), or to in-process") from None
    return cmd


def _run_batch(cmd: list[str], batch: Sequence[tuple[str, Path, Path]], timeout: float) -> dict[str, ProbeOutcome]:
    """Probe ``batch`` (name, model, result file) in one child, in order: one interpreter start and one import
    of llama_cpp for them all (under emulation each costs seconds). A model that kills the child (SIGILL) or
    outlives its share of the time fails alone, as the first without a result; the ones after it get no
    outcome here (the caller probes them in a new child)."""
    limit = timeout * len(batch)
    try:
        proc = subprocess.run(
            [*cmd, str(HERE / "wheel_probe.py"), *(str(p) for _, model, out in batch for p in (model, out))],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=limit,
        )
        rc, log = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, log = None, exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
    outcomes: dict[str, ProbeOutcome] = {}
    for name, _, out in batch:
        if out.is_file():
            outcomes[name] = ProbeOutcome(name, json.loads(out.read_text()), None, log)
            continue
        died_of = signal.Signals(-rc).name if rc is not None and rc < 0 else None
        how = (f"timed out (the batch's {limit:g} s)" if rc is None
               else f"died with signal {died_of}" if died_of else f"exited with code {rc}")
        outcomes[name] = ProbeOutcome(name, None, how, log, signal=died_of)
        break
    return outcomes


def _run_in_process(name: str, model: Path) -> ProbeOutcome:
    try:
        return ProbeOutcome(name, wheel_probe.probe(model), None, "")
    except Exception as exc:
        return ProbeOutcome(name, None, f"raised {type(exc).__name__}: {exc}", "")


@pytest.fixture(scope="session")
def models_module() -> ModuleType:
    return load_models_module()[0]


@pytest.fixture(scope="session")
def facts() -> Iterator[dict[str, Any]]:
    """Observed facts of the run; written to $LLAMA_WHEELS_RESULT at session end."""
    data: dict[str, Any] = {
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "expect_layout": wheel_probe.env_layout(),  # as given; the tests derive it where it is unset
        "models_source": load_models_module()[1],
        "oracle_source": wheel_probe.standalone("oracle")[1],
        "models": {},
    }
    yield data
    out = os.environ.get("LLAMA_WHEELS_RESULT")
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)


def _quantized(models_module: ModuleType, spec: Any, source: Path, cache: Path) -> tuple[Path, str]:
    """``spec``'s model as this wheel's quantizer makes it from ``source`` (F32), from ``cache`` when a
    quantizer of the same llama_cpp version already made it from the same bytes; and the cache key."""
    import llama_cpp

    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    key = f"{spec.name}-{spec.quantize}-{digest}-llama_cpp-{getattr(llama_cpp, '__version__', 'unknown')}"
    out = cache / f"{key}.gguf"
    if not out.is_file():
        cmd = _probe_command()
        if cmd is None:
            wheel_probe.quantize(source, out, spec.quantize)
        else:
            proc = subprocess.run([*cmd, str(HERE / "wheel_probe.py"), "--quantize", str(source), str(out),
                                   spec.quantize], capture_output=True, text=True, errors="replace",
                                  timeout=float(os.environ.get("LLAMA_WHEELS_PROBE_TIMEOUT", "900")))
            if proc.returncode != 0 or not out.is_file():
                tail = "\n".join(proc.stderr.splitlines()[-20:])
                raise RuntimeError(f"quantizing model {spec.name} to {spec.quantize} failed "
                                   f"(exit {proc.returncode}):\n{tail}")
    models_module.file_tensors(spec, out)  # the quantizer kept every tensor and shape
    return out, key


@pytest.fixture(scope="session")
def model_files(models_module: ModuleType, facts: dict[str, Any],
                tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every model of ``models.SPECS``: written by gguf-py, or made by this wheel's quantizer."""
    import llama_cpp

    root = tmp_path_factory.mktemp("models")
    cache = Path(os.environ.get("LLAMA_WHEELS_MODEL_CACHE") or tmp_path_factory.mktemp("quantized"))
    cache.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    facts["quantized"], facts["quantizer_lacks"] = {}, {}
    for name, spec in models_module.SPECS.items():
        files[name] = models_module.write_model(spec, root / f"{name}.gguf")
        if spec.quantize is None:
            continue
        if not hasattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{spec.quantize}"):  # a file type newer than the wheel
            facts["quantizer_lacks"][name] = (f"llama_cpp {getattr(llama_cpp, '__version__', '?')} has no "
                                              f"LLAMA_FTYPE_MOSTLY_{spec.quantize}: its quantizer predates it")
            continue
        files[name], facts["quantized"][name] = _quantized(models_module, spec, files[name], cache)
    return files


@pytest.fixture(scope="session")
def probe(
    model_files: dict[str, Path], facts: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], ProbeOutcome]:
    """``probe(spec_name)``: run the model through the wheel once per session (child process if possible)."""
    import llama_cpp

    cache: dict[str, ProbeOutcome] = {}
    cmd = _probe_command()
    facts["probe_command"] = cmd or "in-process"
    timeout = float(os.environ.get("LLAMA_WHEELS_PROBE_TIMEOUT", "900"))
    out_dir = tmp_path_factory.mktemp("probes")

    def cannot_hold(name: str) -> str | None:
        """Why this wheel's ggml cannot load model ``name`` at all (a type it lacks), recorded; else None."""
        models_module = load_models_module()[0]
        unknown = wheel_probe.unknown_types([t.ggml_type for t in models_module.file_tensors(
            models_module.SPECS[name], model_files[name])])
        reason = facts["quantizer_lacks"].get(name) or (unknown and (
            f"llama_cpp {getattr(llama_cpp, '__version__', '?')} knows no ggml type {', '.join(unknown)}"))
        if reason:
            version = getattr(llama_cpp, "__version__", "unknown")
            cache[name] = ProbeOutcome(name, None, None, "", cannot_hold=reason,
                                       binding_required=wheel_probe.binding_required(version))
            facts["models"][name] = {"cannot_hold": reason}
        return reason or None

    def record(name: str, outcome: ProbeOutcome) -> None:
        facts["models"][name] = {
            "file_bytes": model_files[name].stat().st_size,
            "failure": outcome.failure,
            "signal": outcome.signal,
            "probe": outcome.result,
            "log_tail": None if outcome.result else outcome.log[-4000:],
        }
        cache[name] = outcome

    def run(name: str) -> ProbeOutcome:
        if name in cache or cannot_hold(name):
            return cache[name]
        if cmd is None:
            record(name, _run_in_process(name, model_files[name]))
            return cache[name]
        # This model first, then every other one not probed yet: the session asks for them all sooner or later
        rest = [n for n in model_files if n != name and n not in cache and not cannot_hold(n)]
        batch = [(n, model_files[n], out_dir / f"{n}.json") for n in (name, *rest)]
        for probed, outcome in _run_batch(cmd, batch, timeout).items():
            record(probed, outcome)
        return cache[name]

    return run
