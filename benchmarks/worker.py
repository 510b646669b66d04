"""Child process: time prompt processing and token generation with an installed llama-cpp-python.

Runs inside the benchmarked wheel's environment (``PYTHONPATH`` = its throwaway install directory, plus
``wheel_tests/`` for ``wheel_probe``'s log capture). Imports nothing from ``llama_wheels``. Prints one line
``BENCH {json}``: tokens/s per repetition for prompt processing (one batch of ``--n-prompt`` tokens) and
generation (``--n-gen`` single-token decodes, like llama-bench's tg, from an empty context), the tensors
ggml repacked while loading (read from its log), and ``llama_cpp.diagnostics`` (which CPU variant ran).

usage: python worker.py MODEL --probe-dir DIR --threads N --repack {on,off} --n-prompt P --n-gen G --reps R
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def _tokens(n: int, n_vocab: int, offset: int) -> list[int]:
    """Deterministic ordinary (non-special, non-byte) token ids: the content does not change the cost."""
    first = 259
    return [first + (offset + 7 * i) % (n_vocab - first) for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--probe-dir", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--repack", choices=("on", "off"), required=True)
    p.add_argument("--n-prompt", type=int, required=True)
    p.add_argument("--n-gen", type=int, required=True)
    p.add_argument("--reps", type=int, required=True)
    args = p.parse_args(argv)

    sys.path.insert(0, args.probe_dir)
    import wheel_probe  # type: ignore[import-not-found]

    log = wheel_probe.LogCapture(echo=False)
    log.install()
    from llama_cpp import Llama, diagnostics  # type: ignore[import-not-found]

    mark = log.mark()
    started = time.perf_counter()
    llm = Llama(
        model_path=args.model,
        n_ctx=args.n_prompt + args.n_gen + 16,
        n_batch=args.n_prompt,
        n_ubatch=args.n_prompt,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        seed=0,
        verbose=False,
        use_extra_bufts=args.repack == "on",
    )
    load_seconds = time.perf_counter() - started
    repacked = wheel_probe.oracle().repacked_tensors(log.since(mark))  # the one oracle, by file path
    n_prompt: int = args.n_prompt
    n_gen: int = args.n_gen
    n_vocab = llm.n_vocab()
    prompt = _tokens(args.n_prompt, n_vocab, 0)
    generated = _tokens(args.n_gen, n_vocab, 1)

    def prompt_rate() -> float:
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        return n_prompt / (time.perf_counter() - t0)

    def generation_rate() -> float:
        llm.reset()
        t0 = time.perf_counter()
        for token in generated:
            llm.eval([token])
        return n_gen / (time.perf_counter() - t0)

    prompt_rate(), generation_rate()  # warm-up: compute buffers, page cache, thread pool
    pp, tg = [], []
    for _ in range(args.reps):
        pp.append(prompt_rate())
        tg.append(generation_rate())
    info = diagnostics.collect()
    result: dict[str, Any] = {
        "pp": pp,
        "tg": tg,
        "load_seconds": load_seconds,
        "repacked": len(repacked),
        "layouts": sorted(set(repacked.values())),
        "variant": info["variant"],
        "library": info["library"],
        "fixed_isa": info["fixed_isa"],
        "variant_scores": info["variant_scores"],
        "q4_0_repack_layout": info["q4_0_repack_layout"],
        "system_info": info["system_info"],
    }
    print("BENCH " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
