"""Run one GGUF model through an installed llama-cpp-python and report what happened, as JSON.

Standalone on purpose (stdlib + numpy + llama_cpp, imported lazily): it runs natively, in cibuildwheel's
test environment and in an emulated aarch64 Python, and never needs the ``llama_wheels`` package: of it,
only the standalone modules ``models.py`` and ``oracle.py`` are imported, by file path (``standalone``).

The tests run it as a child process, ``python wheel_probe.py MODEL OUT_JSON``, so that a crash in
llama.cpp (SIGILL from a wrong ISA, GGML_ASSERT in a repack) fails one model instead of killing pytest.

What repacking did is read from llama.cpp's log. ggml 0.3.36 (``ggml-cpu/repack.cpp``) logs every repacked
tensor at DEBUG level as ``repack: repack tensor <name> with <type>_<cols>x<interleave>``, e.g.
``repack: repack tensor blk.0.attn_q.weight with q4_0_8x8``; llama-cpp-python 0.3.4 (ggml-cpu-aarch64.cpp)
logs the same line, also at DEBUG (added by llama.cpp PR #10446, before the 0.3.4 revision).
llama-cpp-python's own log callback forwards DEBUG lines only while its logger is at DEBUG
(``verbose=True``), and ``Llama(verbose=False)`` also redirects fd 1/2 to /dev/null during load. This
probe installs its own callback through ``llama_log_set`` (which also sets ggml's), so it sees every
level regardless of verbosity.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import platform
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

# Prompt as token ids (valid for every vocabulary of at least 262 tokens: BOS, bytes, word pieces).
PROMPT: tuple[int, ...] = (1, 10, 20, 30, 40, 259, 260, 261)
N_GEN = 8
N_CTX = 64
# KV cache in F32 (GGML_TYPE_F32 = 0), not the default F16. Measured under qemu with llama-cpp-python
# 0.3.36: with an F16 cache the armv8.0 CPU variant's attention differs from every FP16-capable variant
# by ~1% of the logit range (0.20 of 16), enough to flip a greedy near-tie of these random tiny models,
# while with F32 all seven emulated CPUs agree to the token. The suite tests repacking and the matmul
# kernels across CPUs, so it keeps F16 attention rounding out of the comparison.
KV_TYPE_F32 = 0
HERE = Path(__file__).resolve().parent

# Each standalone module and the llama_wheels package it lives in.
STANDALONE = {"models": "llama_wheels.standalone", "oracle": "llama_wheels", "hostcpu": "llama_wheels.standalone"}


@functools.cache
def standalone(name: str) -> tuple[ModuleType, str]:
    """llama_wheels' standalone module ``name`` (``models``: the tiny GGUF models; ``oracle``: ggml's
    variant and repack rules) and where it came from, found in this order:

    1. the file named by ``LLAMA_WHEELS_<NAME>_PY`` (e.g. the checkout's copy, for an emulated Python);
    2. ``llama_wheels.standalone.models`` / ``llama_wheels.oracle`` if ``llama_wheels`` is importable;
    3. ``<name>.py`` copied next to these tests;
    4. the file in ``../src/`` when run from a checkout of this repository (cibuildwheel).
    """
    if name not in STANDALONE:
        raise ValueError(f"{name!r} is no standalone llama_wheels module; one of {', '.join(STANDALONE)}")
    variable = f"LLAMA_WHEELS_{name.upper()}_PY"
    env = os.environ.get(variable)
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"{variable}={env} is not a file")
        return _import_path(name, Path(env)), env
    try:
        return importlib.import_module(f"{STANDALONE[name]}.{name}"), f"{STANDALONE[name]}.{name}"
    except ImportError:
        pass
    in_checkout = HERE.parent / "src" / Path(*STANDALONE[name].split(".")) / f"{name}.py"
    for candidate in (HERE / f"{name}.py", in_checkout):
        if candidate.is_file():
            return _import_path(name, candidate), str(candidate)
    raise FileNotFoundError(f"{name} module not found: set {variable}, install llama_wheels, "
                            f"or copy {name}.py next to the wheel tests")


def _import_path(name: str, path: Path) -> ModuleType:
    module_name = f"llama_wheels_{name}_standalone"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the {name} module from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(module)
    return module


def oracle() -> Any:
    """The oracle module (``llama_wheels/oracle.py``): ggml's variant and repack rules."""
    return standalone("oracle")[0]


def q4_0_layouts() -> tuple[str, ...]:
    """The Q4_0 layouts a CPU of this machine's architecture can get (``"none"`` included)."""
    layouts: tuple[str, ...] = oracle().q4_0_layouts(oracle().machine_arch(platform.machine()))
    return layouts


class CannotJudge(RuntimeError):
    """This wheel's expectation on this machine cannot be derived; the message says why and what to do."""


def provenance() -> dict[str, Any] | None:
    """The llama-wheels provenance record of the installed llama-cpp-python, or None (not built by us)."""
    try:
        text = importlib.metadata.distribution("llama-cpp-python").read_text("llama_wheels.json")
    except importlib.metadata.PackageNotFoundError:
        return None
    record: dict[str, Any] | None = json.loads(text) if text else None
    return record


def promises_use_extra_bufts() -> bool:
    """The wheel's provenance record lists a patch that adds the run-time repack switch (use_extra_bufts):
    then its absence is a regression to fail on, not a stock wheel to skip."""
    record = provenance() or {}
    return any("use-extra-bufts" in patch["name"] for patch in record.get("patches", []))


def derived_expectation() -> Any:
    """What the installed wheel must show on this machine, with no environment variable: the oracle applied to
    this CPU's features (``hostcpu``) and to what the wheel's provenance record says it was built as (every
    CPU variant it declares, with their features, or its fixed ISA). ``CannotJudge`` where one is missing."""
    record = provenance()
    if record is None:
        raise CannotJudge("the installed llama-cpp-python has no llama_wheels.json provenance record, so nothing "
                          "says what it was built as; test a wheel llama-wheels built, or set "
                          "LLAMA_WHEELS_EXPECT_LAYOUT")
    hostcpu = standalone("hostcpu")[0]
    try:
        host = hostcpu.read()
    except hostcpu.UnknownHost as exc:
        raise CannotJudge(f"this machine's CPU cannot be judged: {exc}; set LLAMA_WHEELS_EXPECT_LAYOUT") from None
    rules = oracle()
    target = record["target"]
    declared = {name: frozenset(features) for name, features in target.get("cpu_variants", {}).items()}
    build = rules.build_of(target["switches"], declared)  # the same rule as the package's binaries/record.py
    if target["switches"].get("all_variants") is True and not declared:
        raise CannotJudge(f"the provenance record of target {target['name']} lists no cpu_variants (a wheel "
                          "from before llama-wheels recorded them): rebuild it")
    cpu = rules.Cpu(features=frozenset(host.features) & frozenset(rules.ARM_FEATURES), sve_bits=host.sve_bits)
    return rules.expect(build, cpu, declared)


def env_layout() -> str | None:
    """``$LLAMA_WHEELS_EXPECT_LAYOUT`` (checked: a layout of this machine's architecture), or None."""
    value = os.environ.get("LLAMA_WHEELS_EXPECT_LAYOUT") or None
    known = q4_0_layouts()
    if value is not None and value not in known:
        raise ValueError(f"LLAMA_WHEELS_EXPECT_LAYOUT={value!r} is not one of {', '.join(known)} "
                         f"on {platform.machine()}")
    return value


def _derived_or_given(variable: str, given: str | None, pick: Callable[[Any], str | None]) -> str | None:
    """``pick`` of ``derived_expectation()``, which ``given`` (``$variable``) must equal when set; ``given``
    alone where nothing can be derived (``CannotJudge`` when neither is there)."""
    try:
        derived = derived_expectation()
    except CannotJudge:
        if given is None:
            raise
        return given
    value = pick(derived)
    if given is not None and given != value:
        raise CannotJudge(f"{variable}={given} but this CPU and the wheel's provenance record give {value} "
                          f"(oracle: {derived})")
    return value


def _q4_0_layout(derived: Any) -> str:
    layout: str | None = derived.q4_0_layout
    if layout is None:
        raise CannotJudge(f"the oracle cannot tell this wheel's layout on this CPU: {derived}")
    return layout


def expect_layout() -> str:
    """The Q4_0 layout this CPU must get: ``$LLAMA_WHEELS_EXPECT_LAYOUT`` when set (it must then agree with
    the derived one wherever that can be derived), else ``derived_expectation()``'s. ``CannotJudge`` fails
    the test that asks (a wheel on a CPU it should have refused, an unknown host), not the session."""
    layout = _derived_or_given("LLAMA_WHEELS_EXPECT_LAYOUT", env_layout(), _q4_0_layout)
    assert layout is not None  # _q4_0_layout never gives None
    return layout


def env_variant() -> str | None:
    """``$LLAMA_WHEELS_EXPECT_VARIANT``: the CPU variant a runner of known hardware must load (CI sets it where
    it knows the machine: ``apple_m1`` on macos-14), or None."""
    return os.environ.get("LLAMA_WHEELS_EXPECT_VARIANT") or None


def expect_variant() -> str | None:
    """The CPU variant ggml must load here (None: the wheel ships none, a fixed ISA): the derived one, which
    ``$LLAMA_WHEELS_EXPECT_VARIANT`` must equal when set; the variable alone where nothing can be derived."""
    return _derived_or_given("LLAMA_WHEELS_EXPECT_VARIANT", env_variant(), lambda derived: derived.variant)


def loaded_variant() -> str | None:
    """The CPU variant ggml loaded in this process (its library ``libggml-cpu-<variant>``), from the wheel's
    ``llama_cpp._backends``; None when the CPU backend is not a variant library."""
    import llama_cpp.llama_cpp as lib

    backends = importlib.import_module("llama_cpp._backends")
    variant: str | None = backends.cpu_backend(lib._lib)["variant"]
    return variant


def expected_repack(ggml_type: str, ne1: int, expect: str, generation: str, machine: str | None = None,
                    version: str | None = None) -> str | None:
    """The layout a MUL_MAT weight must get on ``machine`` (default: this one) when its Q4_0 layout is
    ``expect``: the oracle's rules applied to the weakest code that gives ``expect``
    (``oracle.code_for_q4_0_layout``); ``version``: the wheel's llama-cpp-python release (a type whose repack
    came later is not repacked by it; None: the rules of the newest pin)."""
    rules = oracle()
    arch = rules.machine_arch(machine or platform.machine())
    code, sve_bits = rules.code_for_q4_0_layout(expect, arch)
    layout: str | None = rules.repack_layout(ggml_type, ne1, code=code, sve_bits=sve_bits, arch=arch,
                                             generation=generation, version=version)
    return layout


class LogCapture:
    """Collects everything llama.cpp/ggml log through ``llama_log_set``; optionally echoes to stderr."""

    def __init__(self, echo: bool = True) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self._echo = echo
        self._chunks: list[str] = []
        self._callback = llama_cpp.llama_log_callback(self._on_log)  # keep a reference: ctypes thunk

    def _on_log(self, level: int, text: bytes | None, user_data: ctypes.c_void_p) -> None:
        s = text.decode("utf-8", "replace") if text else ""
        self._chunks.append(s)
        if self._echo:
            sys.stderr.write(s)
            sys.stderr.flush()

    def install(self) -> None:
        self._llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))

    def mark(self) -> int:
        return len(self._chunks)

    def since(self, mark: int) -> str:
        return "".join(self._chunks[mark:])


@dataclass(frozen=True)
class Run:
    """One load + greedy generation of a model."""

    repacked: dict[str, str]
    tokens: list[int]
    logits: list[float]  # logits after evaluating PROMPT (predicting the first generated token)

    def to_json(self) -> dict[str, Any]:
        return {"repacked": self.repacked, "tokens": self.tokens, "logits": self.logits}


def _greedy(first: Any, step: Any) -> list[int]:
    import numpy as np

    logits, tokens = first, []
    for i in range(N_GEN):
        tokens.append(int(np.argmax(logits)))
        if i < N_GEN - 1:
            logits = step(tokens[-1])
    return tokens


def run_llama(model: Path, log: LogCapture, **extra: Any) -> Run:
    """High-level API: ``Llama(...)``, eval the prompt, greedy argmax decode."""
    import numpy as np
    from llama_cpp import Llama

    mark = log.mark()
    llm = Llama(
        model_path=str(model),
        n_ctx=N_CTX,
        n_threads=1,
        n_threads_batch=1,
        seed=0,
        verbose=True,
        logits_all=True,
        type_k=KV_TYPE_F32,
        type_v=KV_TYPE_F32,
        **extra,
    )
    repacked: dict[str, str] = oracle().repacked_tensors(log.since(mark))
    try:

        def step(tok: int) -> Any:
            llm.eval([tok])
            return np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)

        llm.eval(list(PROMPT))
        first = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        tokens = _greedy(first, step)
    finally:
        close = getattr(llm, "close", None)
        if close is not None:
            close()
    return Run(repacked, tokens, [float(x) for x in first])


def has_use_extra_bufts() -> bool:
    """True when the ctypes ``llama_model_params`` has ``use_extra_bufts`` (llama.cpp PR #14990, July 2025;
    stock 0.3.4 lacks it, and setting a missing field on a ctypes Structure silently does nothing)."""
    import llama_cpp as lc

    return "use_extra_bufts" in [f[0] for f in lc.llama_model_params._fields_]


def _api(*names: str) -> Any:
    """The first of ``names`` the installed llama_cpp has (functions renamed between 0.3.4 and 0.3.36)."""
    import llama_cpp as lc

    for name in names:
        if hasattr(lc, name):
            return getattr(lc, name)
    raise AttributeError(f"llama_cpp has none of {', '.join(names)}")


def run_lowlevel(model: Path, log: LogCapture, use_extra_bufts: bool) -> Run:
    """ctypes API with ``llama_model_params.use_extra_bufts`` set explicitly (repack on/off switch)."""
    import llama_cpp as lc
    import numpy as np

    if not has_use_extra_bufts():
        raise RuntimeError("llama_model_params has no use_extra_bufts field: no runtime repack switch")
    lc.llama_backend_init()
    mparams = lc.llama_model_default_params()
    mparams.use_extra_bufts = use_extra_bufts
    mark = log.mark()
    lmodel = _api("llama_model_load_from_file", "llama_load_model_from_file")(str(model).encode(), mparams)
    if not lmodel:
        raise RuntimeError(f"llama_model_load_from_file failed for {model}")
    repacked: dict[str, str] = oracle().repacked_tensors(log.since(mark))
    ctx = None
    try:
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = N_CTX
        cparams.n_threads = cparams.n_threads_batch = 1
        cparams.no_perf = True
        cparams.type_k = cparams.type_v = KV_TYPE_F32
        if hasattr(cparams, "flash_attn_type"):  # match Llama(flash_attn=False)
            cparams.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        ctx = _api("llama_init_from_model", "llama_new_context_with_model")(lmodel, cparams)
        if not ctx:
            raise RuntimeError(f"llama_init_from_model failed for {model}")
        if hasattr(lc, "llama_vocab_n_tokens"):
            n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(lmodel))
        else:  # 0.3.4
            n_vocab = lc.llama_n_vocab(lmodel)

        def decode(tokens: Sequence[int]) -> Any:
            arr = (lc.llama_token * len(tokens))(*tokens)
            rc = lc.llama_decode(ctx, lc.llama_batch_get_one(arr, len(tokens)))
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
            ptr = lc.llama_get_logits_ith(ctx, -1)
            return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float32)

        first = decode(PROMPT)
        tokens = _greedy(first, lambda tok: decode([tok]))
    finally:
        if ctx:
            lc.llama_free(ctx)
        _api("llama_model_free", "llama_free_model")(lmodel)
    return Run(repacked, tokens, [float(x) for x in first])


def llama_accepts_use_extra_bufts() -> bool:
    """True when ``Llama.__init__`` names ``use_extra_bufts`` (stock 0.3.36 swallows it via **kwargs)."""
    from llama_cpp import Llama

    return "use_extra_bufts" in inspect.signature(Llama.__init__).parameters


def system_info() -> str:
    import llama_cpp

    raw = llama_cpp.llama_print_system_info()
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


@contextmanager
def _phase(result: dict[str, Any], key: str) -> Iterator[None]:
    """Record a phase's exception in the result instead of aborting the other phases."""
    try:
        yield
    except Exception as exc:  # reported to the parent, which fails the test
        result["errors"][key] = f"{type(exc).__name__}: {exc}"


def probe(model: Path) -> dict[str, Any]:
    """Everything the tests check for one model; each phase loads the model afresh."""
    import llama_cpp

    log = LogCapture(echo=True)
    log.install()
    result: dict[str, Any] = {
        "llama_cpp_version": getattr(llama_cpp, "__version__", "unknown"),
        "system_info": system_info(),
        "llama_accepts_use_extra_bufts": llama_accepts_use_extra_bufts(),
        "model_params_has_use_extra_bufts": has_use_extra_bufts(),
        "errors": {},
    }
    phases: list[tuple[str, Any]] = [("llama", lambda: run_llama(model, log))]
    if result["model_params_has_use_extra_bufts"]:
        phases += [
            ("extra_bufts_on", lambda: run_lowlevel(model, log, use_extra_bufts=True)),
            ("extra_bufts_off", lambda: run_lowlevel(model, log, use_extra_bufts=False)),
        ]
    if result["llama_accepts_use_extra_bufts"]:
        phases.append(("llama_extra_bufts_off", lambda: run_llama(model, log, use_extra_bufts=False)))
    for key, fn in phases:
        sys.stderr.write(f"\n@@ wheel_probe phase {key}\n")
        sys.stderr.flush()
        with _phase(result, key):
            result[key] = fn().to_json()
    return result


def binding_required(version: str) -> bool:
    """Whether llama_cpp ``version`` must bind every ggml type the oracle lists (``oracle.TYPES_RELEASE`` or
    later): a model whose type it lacks is then a failure (a binding lost), not a skip (a release that predates
    the type, such as MXFP4 in 0.3.4)."""
    return not oracle().released_before(version, oracle().TYPES_RELEASE)


def unknown_types(ggml_types: Sequence[str]) -> list[str]:
    """The ggml types the installed llama_cpp does not know (no ``llama_cpp.GGML_TYPE_<T>``): MXFP4 came to
    ggml in August 2025, long after llama-cpp-python 0.3.4."""
    import llama_cpp as lc

    return sorted(t for t in set(ggml_types) if not hasattr(lc, f"GGML_TYPE_{t}"))


def quantize(source: Path, out: Path, ftype: str) -> None:
    """``llama_model_quantize`` of the installed wheel: ``source`` (F32) to ``out`` as llama.cpp file type
    ``LLAMA_FTYPE_MOSTLY_<ftype>``, written atomically. The quantizer picks each tensor's type."""
    import llama_cpp as lc

    name = f"LLAMA_FTYPE_MOSTLY_{ftype}"
    if not hasattr(lc, name):
        raise ValueError(f"llama_cpp {getattr(lc, '__version__', '?')} has no {name}")
    params = lc.llama_model_quantize_default_params()
    params.ftype = getattr(lc, name)
    params.nthread = 1
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        rc = lc.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0 or not tmp.is_file():
            raise RuntimeError(f"llama_model_quantize({source.name} -> {ftype}) returned {rc}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 4 and args[0] == "--quantize":
        quantize(Path(args[1]), Path(args[2]), args[3])
        return 0
    if not args or len(args) % 2 or args[0].startswith("-"):
        print("usage: python wheel_probe.py MODEL.gguf OUT.json [MODEL.gguf OUT.json ...] "
              "| --quantize SOURCE.gguf OUT.gguf FTYPE", file=sys.stderr)
        return 2
    pairs = [(Path(args[i]), Path(args[i + 1])) for i in range(0, len(args), 2)]
    for model, _ in pairs:
        if not model.is_file():
            print(f"wheel_probe: model not found: {model}", file=sys.stderr)
            return 2
    # In order, each result written as soon as it is known: when a model kills this process (SIGILL), the
    # caller finds the results before it and knows which one did it (the first without a result).
    for model, out in pairs:
        result = probe(model)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
