"""Tokens/s of one model under several configurations, measured in lock-step so that ratios are paired.

A *case* is one configuration: an installed wheel, repacking on or off, optionally one forced CPU variant.
Cases that share an install (and a forced variant) share one worker process (worker.py) that holds the
model once per repack setting; the others each get their own process. All of a comparison's workers are
loaded and warmed up first; then the controller asks for one pass at a time, round after round, every case
once per round, in an order that alternates (A B, B A, B A, A B for two cases; rotated and reversed for more).
A case's pass i and another's pass i are therefore seconds apart, so a speed phase of the shared machine
(they last several seconds) falls on both: their ratio cancels it (``stats.PairedRatio``). Every worker is
checked to measure what it claims: repacking on repacked tensors, off repacked none, a forced variant is
the one ggml runs.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_wheels.core import runner
from llama_wheels.core.cache import atomic_path
from llama_wheels.core.errors import LlamaWheelsError, VerifyError

from .stats import PairedRatio, Summary, summarize

WORKER = Path(__file__).resolve().parent / "worker.py"
KINDS = ("pp", "tg")  # prompt processing, generation
LOAD_TIMEOUT = 600.0
PASS_TIMEOUT = 600.0


@dataclass(frozen=True, kw_only=True)
class Settings:
    threads: int
    n_prompt: int
    n_gen: int
    passes: int  # recorded passes per case and kind (rounds of the lock-step)

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class Case:
    name: str
    site: Path  # the wheel's throwaway install (PYTHONPATH)
    repack: bool
    lib_path: Path | None = None  # LLAMA_CPP_LIB_PATH: a lib/ holding one forced CPU variant
    expect_variant: str | None = None
    # Repacking must have happened (the repack on/off and dispatch cases). A forced variant without AVX2
    # (or dotprod/i8mm on ARM) has no repacked layout: there it is only recorded.
    must_repack: bool = False
    threads: int | None = None  # n_threads and n_threads_batch of this case (default: the settings')

    @property
    def slot(self) -> str:
        return "on" if self.repack else "off"

    @property
    def process(self) -> tuple[Path, Path | None, int | None]:
        """Cases with the same install, forced variant and thread count run in one worker process."""
        return self.site, self.lib_path, self.threads


@dataclass(kw_only=True)
class CaseResult:
    case: Case
    pp: list[float] = field(default_factory=list)  # tokens/s, pass i of round i
    tg: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self, kind: str) -> Summary:
        """``pp`` (prompt processing) or ``tg`` (generation) tokens/s."""
        return summarize(self.rates(kind))

    def rates(self, kind: str) -> list[float]:
        return {"pp": self.pp, "tg": self.tg}[kind]

    def to_json(self) -> dict[str, Any]:
        keep = ("variant", "library", "fixed_isa", "repacked", "layouts", "q4_0_repack_layout", "load_seconds")
        return {
            "repack": self.case.repack,
            "forced_variant": self.case.expect_variant,
            "pp_tokens_per_s": self.summary("pp").to_json(),
            "tg_tokens_per_s": self.summary("tg").to_json(),
            **{k: self.info.get(k) for k in keep},
        }


def paired(a: CaseResult, b: CaseResult, kind: str) -> PairedRatio:
    """How many times faster ``a`` ran than ``b``, pass by pass (they must come from one lock-step run)."""
    return PairedRatio(tuple(a.rates(kind)), tuple(b.rates(kind)))


def diagnostics(site: Path, lib_path: Path | None = None) -> dict[str, Any]:
    """``python -m llama_cpp.diagnostics --json`` of an install: which variant this CPU gets, and why."""
    out = runner.run(
        [sys.executable, "-m", "llama_cpp.diagnostics", "--json"], env=_env(site, lib_path), capture=True
    )
    start = out.find("{")
    if start < 0:
        raise VerifyError(
            f"llama_cpp.diagnostics in {site} printed no JSON (see the log {runner.current_log().path})"
        )
    result: dict[str, Any] = json.loads(out[start:])
    return result


def _env(site: Path, lib_path: Path | None) -> dict[str, str | None]:
    return {
        "PYTHONPATH": str(site),
        "LLAMA_CPP_LIB_PATH": str(lib_path) if lib_path else None,
        "PYTHONNOUSERSITE": "1",
    }


def check_claims(case: Case, ready: dict[str, Any]) -> dict[str, Any]:
    """What the worker reported for ``case``'s slot, refused unless it measures what the case claims."""
    slot = ready["slots"][case.slot]
    info = {**{k: v for k, v in ready.items() if k != "slots"}, **slot}
    if case.must_repack and slot["repacked"] == 0:
        raise VerifyError(
            f"{case.name}: repacking on, yet ggml repacked no tensor (layout "
            f"{ready['q4_0_repack_layout']}); the comparison would be meaningless"
        )
    if not case.repack and slot["repacked"]:
        raise VerifyError(f"{case.name}: use_extra_bufts=False, yet {slot['repacked']} tensors were repacked")
    if case.expect_variant is not None and ready["variant"] != case.expect_variant:
        raise VerifyError(f"{case.name}: forced CPU variant {case.expect_variant}, but ggml ran {ready['variant']}")
    return info


def round_order(cases: Sequence[Case], index: int) -> list[Case]:
    """Round ``index``'s order: rotated by index // 2, reversed in odd rounds (ABBA for two cases), so each
    case runs first, last and in between, and never in the same place twice in a row."""
    shift = index // 2 % len(cases)
    order = [*cases[shift:], *cases[:shift]]
    return order[::-1] if index % 2 else order


@contextmanager
def _workers(
    cases: Sequence[Case], model: Path, settings: Settings, probe_dir: Path
) -> Iterator[dict[str, tuple[runner.Session, dict[str, Any]]]]:
    """One loaded, warmed-up worker per process group of ``cases``: case name -> its session and READY record.

    Started one after another, each once the previous one is ready: loading and warming up several at once
    would put all their threads on the cores together, and ggml's threads spin while they wait for each other.
    """
    groups: dict[tuple[Path, Path | None, int | None], list[Case]] = {}
    for case in cases:
        groups.setdefault(case.process, []).append(case)
    names = ", ".join(c.name for c in cases)
    with ExitStack() as stack:
        workers: dict[str, tuple[runner.Session, dict[str, Any]]] = {}
        with runner.current_log().stage("load", f"{names}: one after another, warmed up"):
            for (site, lib_path, threads), members in groups.items():
                slots = ",".join(dict.fromkeys(c.slot for c in members))
                worker = stack.enter_context(
                    runner.session(
                        [sys.executable, WORKER, model, "--probe-dir", probe_dir,
                         "--threads", str(threads or settings.threads), "--slots", slots,
                         "--n-prompt", str(settings.n_prompt), "--n-gen", str(settings.n_gen)],
                        env=_env(site, lib_path),
                        cwd=site,
                    )
                )
                ready = json.loads(worker.expect("READY ", timeout=LOAD_TIMEOUT))
                for case in members:
                    workers[case.name] = (worker, ready)
        yield workers
        for worker in dict.fromkeys(w for w, _ in workers.values()):
            worker.send("quit")


def run_lockstep(cases: Sequence[Case], model: Path, settings: Settings, probe_dir: Path) -> dict[str, CaseResult]:
    """``settings.passes`` rounds of every case (pp then tg), in lock-step: results with paired passes."""
    log = runner.current_log()
    names = ", ".join(c.name for c in cases)
    results = {case.name: CaseResult(case=case) for case in cases}
    with _workers(cases, model, settings, probe_dir) as workers:
        for case in cases:
            results[case.name].info = check_claims(case, workers[case.name][1])
        for index in range(settings.passes):
            with log.stage("measure", f"{names}: round {index + 1}/{settings.passes}"):
                for kind in KINDS:
                    for case in round_order(cases, index):
                        worker = workers[case.name][0]
                        worker.send(f"{kind} {case.slot}")
                        rate = json.loads(worker.expect("PASS ", timeout=PASS_TIMEOUT))["rate"]
                        results[case.name].rates(kind).append(float(rate))
    for result in results.values():
        log.progress(
            f"result   {result.case.name}: pp {result.summary('pp').median:.1f} t/s, "
            f"tg {result.summary('tg').median:.1f} t/s, variant {result.info['variant']}, "
            f"{result.info['repacked']} tensors repacked {result.info['layouts']}"
        )
    return results


def write_json(path: Path, data: Any, default: Callable[[Any], Any] | None = None) -> Path:
    """A benchmark report written atomically (nothing half-written if the run is stopped)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=default) + "\n")
    return path


def logged_main(name: str, log_path: Path | None, logs: Path, body: Callable[[], int]) -> int:
    """A benchmark script's ``main``: the full log in a file named first (default ``logs/<name>-<time>.log``),
    errors as one line prefixed ``<name>s:`` with their exit code (2 bad input, 1 a failed run), 130 on Ctrl-C."""
    path = (log_path or logs / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log").resolve()
    log = runner.Log(path)
    runner.set_log(log)
    log.progress(f"full log: {path}")
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{name}s: interrupted", file=sys.stderr)
        return 130
    except LlamaWheelsError as exc:
        print(f"{name}s: error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        log.close()
