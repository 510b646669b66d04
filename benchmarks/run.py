#!/usr/bin/env python3
"""llama-wheels benchmarks (issue #8): what repacking, CPU dispatch and the build caches buy, in one run.

    .venv/bin/python benchmarks/run.py            # repack on/off, dispatch vs exact ISA, every CPU variant
    .venv/bin/python benchmarks/run.py --builds   # + cold/warm/no-op builds, emulated matrix (~15 min)
    .venv/bin/python benchmarks/run.py --smoke    # tiny sizes: proves the scripts work (CI), measures nothing
    .venv/bin/python benchmarks/run.py --arm      # guest instructions per token on every emulated ARM CPU
                                                  # class (benchmarks/arm.py; --smoke: two classes, tiny)

The wheels come from the project's pipeline (built, or reused from the finished-wheel cache), are installed
natively into throwaway directories, and run a random Q4_0 llama model generated into the cache. Writes
``OUT/benchmarks.json`` (with the machine and the commit) and ``OUT/benchmarks.png``, both atomically; the
full log goes to the file named on the first line. Exit code 2 on bad input, 1 when a run fails.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import builds, machine, model, perf, stats, wheels
from llama_wheels.config import Config, load
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache, atomic_path
from llama_wheels.core.errors import LlamaWheelsError, UserError

REPO = Path(__file__).resolve().parent.parent
# Per machine architecture: the runtime-dispatch target. The exact-ISA target it is compared with is the
# fixed-ISA target whose `variant` (build_config/targets.toml) is the one ggml chose on this machine.
DISPATCH_TARGETS = {"x86_64": "linux-x86_64", "aarch64": "linux-aarch64"}
GOALS = {"repack_pp": 1.4, "repack_tg": 1.5, "dispatch": 0.97}
FULL = perf.Settings(threads=2, n_prompt=256, n_gen=64, reps=3, rounds=2)
SMOKE = perf.Settings(threads=2, n_prompt=16, n_gen=4, reps=1, rounds=1)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny model and one repetition (CI: the scripts run)")
    p.add_argument("--builds", action="store_true", help="also time cold/warm/no-op builds and the matrix")
    p.add_argument("--build-reps", type=int, default=2, help="warm and no-op builds each (default 2)")
    p.add_argument(
        "--build-cache",
        type=Path,
        help="cache root for the build timings (default: a temp dir; emptied first, removed after)",
    )
    p.add_argument(
        "--out", type=Path, default=REPO / "reports" / "benchmarks", help="where the JSON and PNG go"
    )
    p.add_argument("--threads", type=int, help=f"threads per run (default {FULL.threads})")
    p.add_argument("--reps", type=int, help="timed passes per process (default 3, smoke 1)")
    p.add_argument("--rounds", type=int, help="processes per case, interleaved (default 2, smoke 1)")
    p.add_argument("--dispatch-target", help="runtime-dispatch target (default: by machine)")
    p.add_argument(
        "--exact-target",
        help="exact-ISA target to compare it with (default: the target whose variant ggml chose here)",
    )
    p.add_argument("--log", type=Path, help="full log (default logs/benchmark-<time>.log)")
    arm = p.add_argument_group("--arm: instruction counts under emulation (benchmarks/arm.py)")
    arm.add_argument("--arm", action="store_true", help="count guest instructions per token on the ARM classes")
    arm.add_argument("--arm-cpus", help="comma-separated CPU classes (default: all; smoke: two)")
    arm.add_argument("--repeat", type=int, help="count every guest process this often (default 1, smoke 2)")
    arm.add_argument("--jobs", type=int, default=2, help="guest processes at a time (default 2)")
    return p


def settings_from(args: argparse.Namespace) -> perf.Settings:
    base = SMOKE if args.smoke else FULL

    def pick(value: int | None, default: int) -> int:
        return default if value is None else value

    chosen = perf.Settings(
        threads=pick(args.threads, base.threads),
        n_prompt=base.n_prompt,
        n_gen=base.n_gen,
        reps=pick(args.reps, base.reps),
        rounds=pick(args.rounds, base.rounds),
    )
    if min(chosen.threads, chosen.reps, chosen.rounds, args.build_reps) < 1:
        raise UserError("--threads, --reps, --rounds and --build-reps must be at least 1")
    return chosen


def exact_target_for(config: Config, dispatch_target: str, variant: str) -> str:
    """The fixed-ISA target of ``dispatch_target``'s platform compiled for exactly ``variant``."""
    platform_name = config.target(dispatch_target).platform
    matches = sorted(
        name
        for name, target in config.targets.items()
        if target.platform == platform_name and target.variant == variant
    )
    if not matches:
        raise UserError(
            f"ggml chose CPU variant {variant!r} on this machine, and no {platform_name} target in "
            f"build_config/targets.toml has variant = {variant!r}: add a fixed-ISA target with that "
            "variant's features, or pass --exact-target"
        )
    return matches[0]


def _pair(results: dict[str, perf.CaseResult], a: str, b: str) -> dict[str, float]:
    return {key: round(stats.ratio(results[a].summary(key), results[b].summary(key)), 4) for key in ("pp", "tg")}


def variant_verdict(runs: dict[str, perf.CaseResult], auto: str, statistic: str) -> dict[str, Any]:
    """Which forced variant was fastest by ``statistic`` ("median" or "high": the best process's pass),
    whether that is ggml's automatic choice, and how far behind the automatic choice is (0.05 = 5%).

    Both are reported because noise on a shared machine only ever slows a run down: where the machine's
    speed changes in phases of seconds, medians rank variants by which phases their passes fell into, and
    the best pass does not.
    """
    verdict: dict[str, Any] = {"fastest": {}, "auto_is_fastest": {}, "auto_behind_fastest": {}}
    for key in ("pp", "tg"):
        value = {name: getattr(run.summary(key), statistic) for name, run in runs.items()}
        fastest = max(value, key=lambda name: value[name])
        verdict["fastest"][key] = fastest
        verdict["auto_is_fastest"][key] = fastest == auto
        verdict["auto_behind_fastest"][key] = round(1 - value[auto] / value[fastest], 4)
    return verdict


def report(
    results: dict[str, perf.CaseResult],
    auto: str,
    scores: dict[str, int],
    exact_target: str,
) -> dict[str, Any]:
    repack = _pair(results, "repack-on", "repack-off")
    dispatch = _pair(results, "repack-on", "exact-isa")
    runs = {name.removeprefix("variant:"): r for name, r in results.items() if name.startswith("variant:")}
    return {
        "repack": {
            "on": results["repack-on"].to_json(),
            "off": results["repack-off"].to_json(),
            "ratio": repack,
            "goal": {"pp": GOALS["repack_pp"], "tg": GOALS["repack_tg"]},
            "met": {"pp": repack["pp"] >= GOALS["repack_pp"], "tg": repack["tg"] >= GOALS["repack_tg"]},
        },
        "dispatch": {
            "dispatch": results["repack-on"].to_json(),
            "exact": results["exact-isa"].to_json(),
            "exact_target": exact_target,
            "ratio": dispatch,
            "goal": GOALS["dispatch"],
            "met": {k: v >= GOALS["dispatch"] for k, v in dispatch.items()},
        },
        "variants": {
            "auto": auto,
            "scores": scores,
            "runs": {v: r.to_json() for v, r in runs.items()},
            "by_median": variant_verdict(runs, auto, "median"),
            "by_best_pass": variant_verdict(runs, auto, "high"),
        },
    }


def table(data: dict[str, Any]) -> str:
    rows = [("measurement", "pp t/s", "tg t/s")]

    def add(label: str, run: dict[str, Any]) -> None:
        rows.append(
            (
                label,
                f"{run['pp_tokens_per_s']['median']:.1f} (±{run['pp_tokens_per_s']['spread']:.0%})",
                f"{run['tg_tokens_per_s']['median']:.1f} (±{run['tg_tokens_per_s']['spread']:.0%})",
            )
        )

    add("repack on", data["repack"]["on"])
    add("repack off", data["repack"]["off"])
    rows.append(
        (
            "  ratio on/off (goal 1.4 / 1.5)",
            f"x{data['repack']['ratio']['pp']:.2f}",
            f"x{data['repack']['ratio']['tg']:.2f}",
        )
    )
    add(f"exact ISA ({data['dispatch']['exact_target']})", data["dispatch"]["exact"])
    rows.append(
        (
            "  ratio dispatch/exact (goal 0.97)",
            f"x{data['dispatch']['ratio']['pp']:.3f}",
            f"x{data['dispatch']['ratio']['tg']:.3f}",
        )
    )
    for variant, run in data["variants"]["runs"].items():
        add(f"variant {variant}" + (" (auto)" if variant == data["variants"]["auto"] else ""), run)
    for label, verdict in (("median", data["variants"]["by_median"]), ("best pass", data["variants"]["by_best_pass"])):
        rows.append(
            (
                f"  fastest by {label} (auto {data['variants']['auto']} behind by)",
                f"{verdict['fastest']['pp']} ({verdict['auto_behind_fastest']['pp']:.0%})",
                f"{verdict['fastest']['tg']} ({verdict['auto_behind_fastest']['tg']:.0%})",
            )
        )
    width = max(len(r[0]) for r in rows)
    lines = [f"{a:<{width}}  {b:>16}  {c:>16}" for a, b, c in rows]
    if data.get("builds"):
        b = data["builds"]
        lines.append(
            f"builds of {b['target']}: cold {b['cold_seconds']:.0f}s, "
            f"warm {b['warm_seconds']['median']:.0f}s "
            f"({b['warm_over_cold']:.0%} of cold), no-op {b['noop_seconds']['median']:.1f}s; "
            + ", ".join(f"matrix {m['wheel']} {m['seconds']:.0f}s" for m in b["matrix"])
        )
    return "\n".join(lines)


def benchmark(args: argparse.Namespace, settings: perf.Settings) -> dict[str, Any]:
    log = runner.current_log()
    config = load(REPO)
    cache = Cache.from_env()
    arch = platform.machine()
    dispatch_target = args.dispatch_target or DISPATCH_TARGETS.get(arch)
    if dispatch_target is None:
        raise UserError(f"no default dispatch target for a {arch} machine; pass --dispatch-target")
    if args.exact_target is not None:
        config.target(args.exact_target)  # an unknown name fails before anything is built
    head, dirty = machine.commit(REPO)
    started_on = machine.machine()
    spec = model.SMOKE if args.smoke else model.FULL
    with tempfile.TemporaryDirectory(prefix="llama-wheels-bench-") as tmp:
        scratch = Path(tmp)
        built: dict[str, Path] = {}
        sites: dict[str, Path] = {}

        def build_and_install(target: str) -> None:
            with log.stage("wheel", f"{target} (pipeline; cached when unchanged)"):
                built.update(wheels.build(config, [target], cache, scratch / "dist"))
            with log.stage("install", f"{built[target].name} ({target}) natively into a throwaway dir"):
                sites[target] = wheels.install(built[target], scratch / f"site-{target}", config, scratch)

        build_and_install(dispatch_target)
        diag = perf.diagnostics(sites[dispatch_target])
        auto, scores = diag["variant"], dict(diag["variant_scores"])
        if not auto:
            raise UserError(f"{dispatch_target} is not a runtime-dispatch wheel (no CPU variant chosen)")
        log.progress(
            f"dispatch {dispatch_target}: ggml chose {auto} (scores {scores}), "
            f"Q4_0 repack {diag['q4_0_repack_layout']}"
        )
        exact_target = args.exact_target or exact_target_for(config, dispatch_target, auto)
        build_and_install(exact_target)
        with log.stage("model", f"{spec.name} ({model.parameters(spec) / 1e6:.0f} M parameters, cached)"):
            gguf = model.ensure_model(spec, cache)
        cases = [
            perf.Case(name="repack-on", site=sites[dispatch_target], repack=True, must_repack=True),
            perf.Case(name="repack-off", site=sites[dispatch_target], repack=False),
            perf.Case(name="exact-isa", site=sites[exact_target], repack=True, must_repack=True),
        ]
        for variant in (v for v, score in scores.items() if score > 0):
            lib = wheels.single_variant_lib(sites[dispatch_target], variant, scratch / f"lib-{variant}")
            cases.append(
                perf.Case(
                    name=f"variant:{variant}",
                    site=sites[dispatch_target],
                    repack=True,
                    lib_path=lib,
                    expect_variant=variant,
                )
            )
        results = perf.run_cases(cases, gguf, settings, REPO / "wheel_tests")
        data = report(results, auto, scores, exact_target)
        build_times = None
        if args.builds:
            root = args.build_cache.resolve() if args.build_cache else scratch / "build-cache"
            try:
                build_times = builds.run_builds(config, cache, root, scratch, reps=args.build_reps)
            finally:
                if args.build_cache is None:
                    runner.run(["rm", "-rf", str(root)])
    return {
        **machine.report_header(head, dirty, args.smoke),
        "machine": {**started_on, "loadavg_end": list(machine.machine()["loadavg"])},
        "settings": settings.to_json(),
        "case_order": "one unrecorded warm-up run, then rounds, round r rotated by r * (cases // rounds)",
        "model": {
            "name": spec.name,
            "parameters": model.parameters(spec),
            "size_mb": gguf.stat().st_size / 1e6,
            "n_layer": spec.n_layer,
            "n_embd": spec.n_embd,
            "n_ff": spec.n_ff,
            "n_vocab": spec.n_vocab,
        },
        "targets": {
            "dispatch": dispatch_target,
            "exact": exact_target,
            "exact_variant": config.target(exact_target).variant,
            "wheels": {t: w.name for t, w in built.items()},
        },
        **data,
        "builds": build_times,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    log_path = (args.log or REPO / "logs" / f"benchmark-{time.strftime('%Y%m%d-%H%M%S')}.log").resolve()
    log = runner.Log(log_path)
    runner.set_log(log)
    log.progress(f"full log: {log_path}")
    try:
        if args.arm:
            from benchmarks import arm

            if args.out == parser().get_default("out"):
                args.out = REPO / "reports" / "arm"
            arm_data = arm.main_arm(args)
            print(arm.table(arm_data))
            print(f"wrote {args.out.resolve() / 'arm.json'} and {args.out.resolve() / 'arm.png'}")
            return 0
        settings = settings_from(args)
        data = benchmark(args, settings)
        out = args.out.resolve()
        json_path = out / "benchmarks.json"
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n")
        from benchmarks.chart import write_chart  # matplotlib only once there is something to draw

        png = write_chart(data, out / "benchmarks.png")
        print(table(data))
        print(f"wrote {json_path} and {png}")
        return 0
    except KeyboardInterrupt:
        print("benchmarks: interrupted", file=sys.stderr)
        return 130
    except LlamaWheelsError as exc:
        print(f"benchmarks: error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        log.close()


if __name__ == "__main__":
    sys.exit(main())
