"""llama-wheels benchmarks (issue #8): what repacking, CPU dispatch and the build caches buy, in one run.

    .venv/bin/python -m benchmarks.run            # repack on/off, dispatch vs exact ISA, every CPU variant
    .venv/bin/python -m benchmarks.run --builds   # + cold/warm/no-op builds, emulated matrix (~15 min)
    .venv/bin/python -m benchmarks.run --smoke    # tiny sizes: proves the scripts work (CI), measures nothing
    .venv/bin/python -m benchmarks.run --arm      # guest instructions per token on every emulated ARM CPU
                                                  # class (benchmarks/arm.py; --smoke: two classes, tiny)
(from the checkout root: ``benchmarks`` is a package beside ``src/``.)

The wheels come from the project's pipeline (built, or reused from the finished-wheel cache), are installed
natively into throwaway directories, and run a random Q4_0 llama model generated into the cache. Writes
``OUT/benchmarks.json`` (with the machine and the commit) and ``OUT/benchmarks.png``, both atomically; the
full log goes to the file named on the first line. Exit code 2 on bad input, 1 when a run fails.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import builds, machine, model, perf, wheels
from llama_wheels.config import Config, load
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import UserError

REPO = Path(__file__).resolve().parent.parent
# Per machine architecture: the runtime-dispatch target. The exact-ISA target it is compared with is the
# fixed-ISA target whose `variant` (build_config/targets.toml) is the one ggml chose on this machine.
DISPATCH_TARGETS = {"x86_64": "linux-x86_64", "aarch64": "linux-aarch64"}
GOALS = {"repack_pp": 1.4, "repack_tg": 1.5, "dispatch": 0.97}
FULL = perf.Settings(threads=2, n_prompt=256, n_gen=64, passes=12)
SMOKE = perf.Settings(threads=2, n_prompt=16, n_gen=4, passes=3)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
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
    p.add_argument(
        "--passes", type=int, help=f"paired passes per case (default {FULL.passes}, smoke {SMOKE.passes}; at least 2)"
    )
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
        passes=pick(args.passes, base.passes),
    )
    if min(chosen.threads, args.build_reps) < 1 or chosen.passes < 2:
        raise UserError("--threads and --build-reps must be at least 1, --passes at least 2 (a paired interval)")
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


def _ratios(a: perf.CaseResult, b: perf.CaseResult) -> dict[str, dict[str, Any]]:
    return {kind: perf.paired(a, b, kind).to_json() for kind in perf.KINDS}


def _goal(ratios: dict[str, dict[str, Any]], goals: dict[str, float]) -> dict[str, Any]:
    """Per kind: the goal, whether the paired ratio meets it, and whether the whole 95% interval does."""
    return {
        kind: {
            "goal": goals[kind],
            "met": ratios[kind]["ratio"] >= goals[kind],
            "lower95_met": ratios[kind]["ci95"][0] >= goals[kind],
        }
        for kind in perf.KINDS
    }


def variant_verdict(runs: dict[str, perf.CaseResult], auto: str) -> dict[str, Any]:
    """Each forced variant against ggml's automatic choice, pass by pass (all ran in one lock-step):
    the fastest by paired ratio, whether that is the automatic choice, and whether a faster one is faster
    beyond doubt (its whole 95% interval above 1)."""
    verdict: dict[str, Any] = {"vs_auto": {}, "fastest": {}, "auto_is_fastest": {}, "beats_auto_surely": {}}
    for kind in perf.KINDS:
        vs_auto = {name: perf.paired(run, runs[auto], kind) for name, run in runs.items()}
        fastest = max(vs_auto, key=lambda name: vs_auto[name].ratio)
        verdict["vs_auto"][kind] = {name: r.to_json() for name, r in vs_auto.items()}
        verdict["fastest"][kind] = fastest
        verdict["auto_is_fastest"][kind] = fastest == auto
        verdict["beats_auto_surely"][kind] = sorted(n for n, r in vs_auto.items() if r.interval[0] > 1)
    return verdict


def report(
    repack: dict[str, perf.CaseResult],
    dispatch: dict[str, perf.CaseResult],
    variants: dict[str, perf.CaseResult],
    auto: str,
    scores: dict[str, int],
    exact_target: str,
) -> dict[str, Any]:
    """The JSON report of the three lock-step runs: repack on/off, dispatch/exact, every variant forced."""
    repack_ratio = _ratios(repack["repack-on"], repack["repack-off"])
    dispatch_ratio = _ratios(dispatch["dispatch"], dispatch["exact-isa"])
    runs = {name.removeprefix("variant:"): r for name, r in variants.items()}
    return {
        "repack": {
            "on": repack["repack-on"].to_json(),
            "off": repack["repack-off"].to_json(),
            "ratio": repack_ratio,
            "goal": _goal(repack_ratio, {"pp": GOALS["repack_pp"], "tg": GOALS["repack_tg"]}),
        },
        "dispatch": {
            "dispatch": dispatch["dispatch"].to_json(),
            "exact": dispatch["exact-isa"].to_json(),
            "exact_target": exact_target,
            "ratio": dispatch_ratio,
            "goal": _goal(dispatch_ratio, {"pp": GOALS["dispatch"], "tg": GOALS["dispatch"]}),
        },
        "variants": {
            "auto": auto,
            "scores": scores,
            "runs": {v: r.to_json() for v, r in runs.items()},
            "paired": variant_verdict(runs, auto),
        },
    }


def _ratio_cell(ratio: dict[str, Any]) -> str:
    low, high = ratio["ci95"]
    return f"x{ratio['ratio']:.3f} [{low:.3f}, {high:.3f}]"


def table(data: dict[str, Any]) -> str:
    rows = [("measurement", "pp", "tg")]

    def add(label: str, run: dict[str, Any]) -> None:
        rows.append(
            (
                label,
                f"{run['pp_tokens_per_s']['median']:.1f} t/s (±{run['pp_tokens_per_s']['spread']:.0%})",
                f"{run['tg_tokens_per_s']['median']:.1f} t/s (±{run['tg_tokens_per_s']['spread']:.0%})",
            )
        )

    def ratio(label: str, ratios: dict[str, Any]) -> None:
        rows.append((label, _ratio_cell(ratios["pp"]), _ratio_cell(ratios["tg"])))

    add("repack on", data["repack"]["on"])
    add("repack off", data["repack"]["off"])
    ratio(f"  paired on/off, 95% CI (goal {GOALS['repack_pp']} / {GOALS['repack_tg']})", data["repack"]["ratio"])
    add(f"dispatch ({data['dispatch']['dispatch']['variant']})", data["dispatch"]["dispatch"])
    add(f"exact ISA ({data['dispatch']['exact_target']})", data["dispatch"]["exact"])
    ratio(f"  paired dispatch/exact, 95% CI (goal {GOALS['dispatch']})", data["dispatch"]["ratio"])
    paired = data["variants"]["paired"]
    for variant, run in data["variants"]["runs"].items():
        add(f"variant {variant}" + (" (auto)" if variant == data["variants"]["auto"] else ""), run)
        ratio(f"  paired {variant}/auto, 95% CI", {k: paired["vs_auto"][k][variant] for k in perf.KINDS})
    rows.append(
        (
            "  fastest (surely faster than auto)",
            f"{paired['fastest']['pp']} ({', '.join(paired['beats_auto_surely']['pp']) or 'none'})",
            f"{paired['fastest']['tg']} ({', '.join(paired['beats_auto_surely']['tg']) or 'none'})",
        )
    )
    width = max(len(r[0]) for r in rows)
    lines = [f"{a:<{width}}  {b:>26}  {c:>26}" for a, b, c in rows]
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
        dispatch_site = sites[dispatch_target]
        probe_dir = REPO / "wheel_tests"
        with log.stage("lockstep", "repack on vs off (one process, both models)"):
            repack = perf.run_lockstep(
                [perf.Case(name="repack-on", site=dispatch_site, repack=True, must_repack=True),
                 perf.Case(name="repack-off", site=dispatch_site, repack=False)],
                gguf, settings, probe_dir)
        with log.stage("lockstep", f"dispatch vs exact ISA {exact_target} (two processes)"):
            dispatch = perf.run_lockstep(
                [perf.Case(name="dispatch", site=dispatch_site, repack=True, must_repack=True),
                 perf.Case(name="exact-isa", site=sites[exact_target], repack=True, must_repack=True)],
                gguf, settings, probe_dir)
        forced = [
            perf.Case(name=f"variant:{variant}", site=dispatch_site, repack=True, expect_variant=variant,
                      lib_path=wheels.single_variant_lib(dispatch_site, variant, scratch / f"lib-{variant}"))
            for variant, score in scores.items() if score > 0
        ]
        with log.stage("lockstep", f"{len(forced)} CPU variants, each forced (one process each)"):
            variants = perf.run_lockstep(forced, gguf, settings, probe_dir)
        data = report(repack, dispatch, variants, auto, scores, exact_target)
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
        "case_order": "lock-step: every case loaded and warmed up, then per round one pp pass of each case, then "
        "one tg pass of each, round r rotated by r // 2 and reversed when r is odd (ABBA for two cases)",
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

    def body() -> int:
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
        json_path = perf.write_json(out / "benchmarks.json", data)
        from benchmarks.chart import write_chart  # matplotlib only once there is something to draw

        png = write_chart(data, out / "benchmarks.png")
        print(table(data))
        print(f"wrote {json_path} and {png}")
        return 0

    return perf.logged_main("benchmark", args.log, REPO / "logs", body)


if __name__ == "__main__":
    sys.exit(main())
