"""Tokens/s of one model under several configurations, measured side by side in one run.

Each configuration (a *case*: an installed wheel, repacking on or off, optionally one forced CPU variant)
runs in its own child process (worker.py) that loads the model once, warms up, then times ``reps``
prompt-processing and generation passes. ``rounds`` repeats every case in turn, each round starting
further on in the list (A B C D, C D A B, ...): no case runs twice in a row, and each runs early in some
rounds and late in others. On a shared VM the speed changes in phases of several seconds, so two
back-to-back processes of one case would be one sample, not two. One unrecorded warm-up run comes before
all of them (the first process on a quiet machine ran measurably slower: page cache, clock ramp). Every
run is checked to measure what it claims: repacking on repacked tensors, off repacked none, a forced
variant is the one ggml ran.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_wheels.core import runner
from llama_wheels.core.errors import LlamaWheelsError, VerifyError

from .stats import Summary, summarize

WORKER = Path(__file__).resolve().parent / "worker.py"
_MARK = "BENCH "


@dataclass(frozen=True, kw_only=True)
class Settings:
    threads: int
    n_prompt: int
    n_gen: int
    reps: int
    rounds: int

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


@dataclass(kw_only=True)
class CaseResult:
    case: Case
    pp: list[float] = field(default_factory=list)
    tg: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pp_summary(self) -> Summary:
        return summarize(self.pp)

    @property
    def tg_summary(self) -> Summary:
        return summarize(self.tg)

    def summary(self, key: str) -> Summary:
        """``pp`` (prompt processing) or ``tg`` (generation) tokens/s."""
        return {"pp": self.pp_summary, "tg": self.tg_summary}[key]

    def to_json(self) -> dict[str, Any]:
        keep = (
            "variant",
            "library",
            "fixed_isa",
            "repacked",
            "layouts",
            "q4_0_repack_layout",
            "load_seconds",
        )
        return {
            "repack": self.case.repack,
            "forced_variant": self.case.expect_variant,
            "pp_tokens_per_s": self.pp_summary.to_json(),
            "tg_tokens_per_s": self.tg_summary.to_json(),
            **{k: self.info.get(k) for k in keep},
        }


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


def run_once(case: Case, model: Path, settings: Settings, probe_dir: Path) -> dict[str, Any]:
    """One worker process for ``case``: its parsed BENCH record, checked against what the case claims."""
    out = runner.run(
        [
            sys.executable,
            WORKER,
            model,
            "--probe-dir",
            probe_dir,
            "--threads",
            str(case.threads or settings.threads),
            "--repack",
            "on" if case.repack else "off",
            "--n-prompt",
            str(settings.n_prompt),
            "--n-gen",
            str(settings.n_gen),
            "--reps",
            str(settings.reps),
        ],
        env=_env(case.site, case.lib_path),
        capture=True,
        cwd=case.site,
    )
    lines = [line for line in out.splitlines() if line.startswith(_MARK)]
    if len(lines) != 1:
        raise VerifyError(
            f"{case.name}: the worker printed {len(lines)} results, expected 1 "
            f"(log {runner.current_log().path})"
        )
    record: dict[str, Any] = json.loads(lines[0][len(_MARK) :])
    if case.must_repack and record["repacked"] == 0:
        raise VerifyError(
            f"{case.name}: repacking on, yet ggml repacked no tensor (layout "
            f"{record['q4_0_repack_layout']}); the comparison would be meaningless"
        )
    if not case.repack and record["repacked"]:
        raise VerifyError(
            f"{case.name}: use_extra_bufts=False, yet {record['repacked']} tensors were repacked"
        )
    if case.expect_variant is not None and record["variant"] != case.expect_variant:
        raise VerifyError(
            f"{case.name}: forced CPU variant {case.expect_variant}, but ggml ran {record['variant']}"
        )
    return record


def schedule(cases: Sequence[Case], rounds: int) -> list[tuple[int, Case]]:
    """(round, case) in the order they run: every round runs every case, round r rotated by r * step.

    ``step`` = len(cases) // rounds (at least 1) spreads each case's positions over the rounds. A round
    ends with case (r * step - 1) and the next starts with case ((r + 1) * step): never the same case
    unless there are only two.
    """
    step = max(1, len(cases) // rounds)
    order = []
    for index in range(rounds):
        start = index * step % len(cases)
        order += [(index + 1, case) for case in [*cases[start:], *cases[:start]]]
    return order


def run_cases(
    cases: Sequence[Case], model: Path, settings: Settings, probe_dir: Path
) -> dict[str, CaseResult]:
    log = runner.current_log()
    results = {case.name: CaseResult(case=case) for case in cases}
    with log.stage("warm-up", f"{cases[0].name} (not recorded)"):
        run_once(cases[0], model, settings, probe_dir)
    for round_no, case in schedule(cases, settings.rounds):
        with log.stage("measure", f"{case.name} (round {round_no}/{settings.rounds})"):
            record = run_once(case, model, settings, probe_dir)
        result = results[case.name]
        if result.info and record["variant"] != result.info["variant"]:
            raise VerifyError(
                f"{case.name}: ran variant {record['variant']}, earlier {result.info['variant']}"
            )
        result.info = {k: v for k, v in record.items() if k not in ("pp", "tg")}
        result.pp += record["pp"]
        result.tg += record["tg"]
        log.progress(
            f"result   {case.name}: pp {summarize(record['pp']).median:.1f} t/s, "
            f"tg {summarize(record['tg']).median:.1f} t/s, variant {record['variant']}, "
            f"{record['repacked']} tensors repacked {record['layouts']}"
        )
    return results


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
