"""Patch 0008's effect: wall time per generated token at the old default thread count and the patched one.

    .venv/bin/python -m benchmarks.threads            # linux-x86_64-haswell wheel, natively (~3 min)
    .venv/bin/python -m benchmarks.threads --smoke    # tiny sizes: proves the script works, measures nothing

The thread counts of the old default (``cpu_count() // 2`` for generation: upstream, and patch 0008's x86_64
branch) and of the patched aarch64 one forced here (every CPU of the affinity mask), plus one thread, each
run as a case, in lock-step (perf.run_lockstep: one process per thread count, passes alternating), so the
old/patched ratio is paired, with its 95% interval. A
wheel with patch 0008 is checked first: its ``default_n_threads()`` must give those counts (x86_64
unchanged). Writes ``OUT/threads.json`` atomically and prints the table; the full log goes to the file named
on the first line. Exit code 2 on bad input, 1 when a run fails.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import machine, model, perf, stats, wheels
from llama_wheels.config import load
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import UserError, VerifyError
from llama_wheels.emulation.guest import reported

REPO = Path(__file__).resolve().parent.parent
FULL = perf.Settings(threads=1, n_prompt=64, n_gen=64, passes=12)
SMOKE = perf.Settings(threads=1, n_prompt=8, n_gen=4, passes=3)
_DEFAULTS = """\
import json
try:
    from llama_cpp.llama import default_n_threads as d
except ImportError:  # a wheel without patch 0008
    print("DEFAULTS null")
else:
    print("DEFAULTS " + json.dumps({"native": d(), "x86_64": d("x86_64"), "aarch64": d("aarch64")}))
"""


def defaults(site: Path) -> dict[str, list[int]] | None:
    """The installed wheel's ``default_n_threads`` (patch 0008): here, forced to x86_64, forced to aarch64;
    None for a wheel without the patch."""
    out = runner.run([sys.executable, "-c", _DEFAULTS], env={"PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"},
                     capture=True)
    found = reported(out.splitlines(), "DEFAULTS")
    if not found:
        raise VerifyError(f"{site}: the llama_cpp probe printed nothing (log {runner.current_log().path})")
    result: dict[str, list[int]] | None = found[-1]
    return result


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.passes < 2:
        raise UserError(f"--passes {args.passes}: at least 2 paired passes are needed for an interval")
    log = runner.current_log()
    config, cache = load(REPO), Cache.from_env()
    settings = SMOKE if args.smoke else perf.Settings(threads=1, n_prompt=FULL.n_prompt, n_gen=args.n_gen,
                                                      passes=args.passes)
    spec = model.SMOKE if args.smoke else model.FULL
    # What each default gives on this machine: the old one (upstream, and patch 0008's x86_64 branch) and the
    # patched aarch64 one (every CPU of the affinity mask), forced here.
    cpus = multiprocessing.cpu_count()
    old, patched = [max(cpus // 2, 1), cpus], [len(os.sched_getaffinity(0))] * 2
    with tempfile.TemporaryDirectory(prefix="llama-wheels-threads-") as tmp:
        scratch = Path(tmp)
        if args.wheel is None:
            with log.stage("wheel", f"{args.target} (pipeline; cached when unchanged)"):
                wheel = wheels.build(config, [args.target], cache, scratch / "dist")[args.target]
        else:
            wheel = args.wheel.resolve()
        with log.stage("install", f"{wheel.name} natively into a throwaway dir"):
            site = wheels.install(wheel, scratch / "site", config, scratch)
        got = defaults(site)
        if got is not None and (got["native"], got["x86_64"], got["aarch64"]) != (old, old, patched):
            raise VerifyError(f"the wheel's default_n_threads gives {got}, expected native and x86_64 {old} (the "
                              f"old default, unchanged), aarch64 {patched} (the affinity mask)")
        counts = sorted({1, old[0], patched[0]})
        log.progress(f"defaults old {old}, patched aarch64 {patched} "
                     f"({'checked against the wheel' if got else 'the wheel lacks patch 0008'}); "
                     f"measuring {counts} threads")
        with log.stage("model", f"{spec.name} (cached)"):
            gguf = model.ensure_model(spec, cache)
        cases = [perf.Case(name=f"threads:{n}", site=site, repack=True, must_repack=True, threads=n)
                 for n in counts]
        results = perf.run_lockstep(cases, gguf, settings, REPO / "wheel_tests")
    ms = {n: stats.summarize([1000 / t for t in results[f"threads:{n}"].tg]) for n in counts}
    return {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": machine.commit(REPO)[0],
        "smoke": args.smoke,
        "machine": machine.machine(),
        "wheel": wheel.name,
        "wheel_has_patch_0008": got is not None,
        "settings": settings.to_json(),
        "model": spec.name,
        "defaults": {"old": old, "aarch64": patched},
        "ms_per_token": {str(n): s.to_json() for n, s in ms.items()},
        # tokens/s of the patched default over the old one, pass by pass: how much faster the patched one is
        "patched_over_old": perf.paired(results[f"threads:{patched[0]}"], results[f"threads:{old[0]}"], "tg").to_json(),
    }


def table(data: dict[str, Any]) -> str:
    old, new = data["defaults"]["old"][0], data["defaults"]["aarch64"][0]
    lines = ["| threads | which default | ms per generated token, median (spread) | min-max |", "|---|---|---|---|"]
    for n, s in data["ms_per_token"].items():
        which = " and ".join(w for w, c in (("old", old), ("patched (aarch64 forced)", new)) if c == int(n)) or "-"
        lines.append(f"| {n} | {which} | {s['median']:.2f} ({s['spread']:.0%}) | {s['min']:.2f}-{s['max']:.2f} |")
    ratio = data["patched_over_old"]
    lines.append(f"\npatched / old default, generation speed: x{ratio['ratio']} "
                 f"(95% CI {ratio['ci95'][0]}-{ratio['ci95'][1]}, {ratio['pairs']} paired passes)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--target", default="linux-x86_64-haswell", help="an x86_64 target (default: %(default)s)")
    p.add_argument("--wheel", type=Path, help="an x86_64 wheel to measure instead of building --target")
    p.add_argument("--passes", type=int, default=FULL.passes, help="paired passes per thread count (at least 2)")
    p.add_argument("--n-gen", type=int, default=FULL.n_gen)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: proves the script works")
    p.add_argument("--out", type=Path, default=REPO / "reports" / "benchmarks")
    p.add_argument("--log", type=Path)
    args = p.parse_args(argv)

    def body() -> int:
        data = measure(args)
        path = perf.write_json(args.out.resolve() / "threads.json", data)
        print(table(data))
        print(f"wrote {path}")
        return 0

    return perf.logged_main("thread", args.log, REPO / "logs", body)


if __name__ == "__main__":
    sys.exit(main())
