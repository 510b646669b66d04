"""Guest process of ``benchmarks/run.py --arm``: runs inside the emulated Python under the counting qemu and
marks the regions whose instructions the insn_count plugin counts.

Runs each case of a JSON plan in turn, in this one process: load the model (``use_extra_bufts`` on or off),
evaluate the prompt in one batch, then generate ``n_gen`` tokens one decode at a time, continuing from the
prompt. Case i's regions are 1 + 3i (load), 2 + 3i (prompt), 3 + 3i (generation); region 0 is Python's
start and the imports, region 1 + 3 * len(cases) what follows each case (freeing it, the diagnostics).
The plan's thread count is 1 for every count that is reported as such (ggml's thread pool spins while it
waits: counts with more threads depend on the host's scheduling).
Imports nothing from ``llama_wheels``. Prints one line ``ARM {json}``: per case the tensors ggml repacked
(read from its log) and their layouts, and which CPU variant ran (``llama_cpp.diagnostics``).

usage: python arm_worker.py PLAN-JSON --probe-dir DIR --magic M   (the plan itself, not a file: see arm.py)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
from typing import Any

PHASES = ("load", "prompt", "generation")
_libc = ctypes.CDLL(None, use_errno=True)


def region_of(case: int, phase: str) -> int:
    return 1 + len(PHASES) * case + PHASES.index(phase)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("plan")
    p.add_argument("--probe-dir", required=True)
    p.add_argument("--magic", type=int, required=True)
    args = p.parse_args(argv)
    plan = json.loads(args.plan)

    def mark(region: int) -> None:
        # write(-1, NULL, MAGIC + region): the kernel (qemu) answers EBADF/EFAULT; the plugin sees the call.
        _libc.syscall(64, -1, None, args.magic + region)

    sys.path.insert(0, args.probe_dir)
    import llama_cpp  # type: ignore[import-not-found]
    import wheel_probe  # type: ignore[import-not-found]
    from llama_cpp import Llama, diagnostics
    from worker import _tokens  # type: ignore[import-not-found]  # benchmarks/worker.py's prompt, staged beside

    # Only ggml's repack lines are kept: a log line's length varies with the timings some lines report,
    # and keeping such text moves the heap, and with it ggml's pointer-hashed sets (measured: +-0.01% of
    # a prompt's instructions in ggml_backend_sched_split_graph between two runs).
    kept: list[bytes] = []

    def on_log(level: int, text: bytes | None, user_data: ctypes.c_void_p) -> None:
        if text and b"repack tensor" in text:
            kept.append(text)

    callback = llama_cpp.llama_log_callback(on_log)
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))

    results: list[dict[str, Any]] = []
    for i, case in enumerate(plan["cases"]):
        n_prompt, n_gen = plan["n_prompt"], plan["n_gen"]
        at = len(kept)
        mark(region_of(i, "load"))
        llm = Llama(model_path=case["model"], n_ctx=n_prompt + n_gen + 16, n_batch=n_prompt, n_ubatch=n_prompt,
                    n_threads=plan["threads"], n_threads_batch=plan["threads"], seed=0, verbose=False,
                    use_extra_bufts=case["repack"])
        n_vocab = llm.n_vocab()
        prompt, generated = _tokens(n_prompt, n_vocab, 0), _tokens(n_gen, n_vocab, 1)
        mark(region_of(i, "prompt"))
        llm.eval(prompt)
        mark(region_of(i, "generation"))
        for token in generated:
            llm.eval([token])
        mark(region_of(len(plan["cases"]), "load"))  # the tail: freeing this model, the next case's setup
        repacked = wheel_probe.oracle().repacked_tensors(b"".join(kept[at:]).decode("utf-8", "replace"))
        getattr(llm, "close", lambda: None)()
        results.append({"repacked": len(repacked), "layouts": sorted(set(repacked.values()))})
    info = diagnostics.collect()
    print("ARM " + json.dumps({"cases": results, "variant": info["variant"], "library": info["library"],
                               "fixed_isa": info["fixed_isa"], "variant_scores": info["variant_scores"]}),
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
