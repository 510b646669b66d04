"""Child process: prompt-processing and generation passes with an installed llama-cpp-python, on command.

Runs inside the benchmarked wheel's environment (``PYTHONPATH`` = its throwaway install directory, plus
``wheel_tests/`` for ``wheel_probe``'s log capture). Imports nothing from ``llama_wheels``.

It loads the model once per *slot* (``on``: repacking on, ``use_extra_bufts=True``; ``off``: off), runs one
unrecorded pass of each kind per slot (compute buffers, page cache, thread pool), and prints one line
``READY {json}``: per slot, the tensors ggml repacked while loading (read from its log) and
``llama_cpp.diagnostics`` (which CPU variant runs). Then it reads commands from stdin, one per line:

    pp SLOT   one batch of --n-prompt tokens from an empty context; prints ``PASS {"rate": tokens/s}``
    tg SLOT   --n-gen single-token decodes from an empty context (like llama-bench's tg); the same
    quit      (or end of input) exits

The controller (perf.py) drives several of these in lock-step, so that two configurations' passes run
next to each other in time. usage: python worker.py MODEL --probe-dir DIR --threads N --slots on[,off]
--n-prompt P --n-gen G
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
    p.add_argument("--slots", required=True, help="comma-separated: on, off")
    p.add_argument("--n-prompt", type=int, required=True)
    p.add_argument("--n-gen", type=int, required=True)
    args = p.parse_args(argv)
    slots = args.slots.split(",")
    if not slots or set(slots) - {"on", "off"} or len(set(slots)) != len(slots):
        p.error(f"--slots: a comma-separated subset of on,off, not {args.slots!r}")

    sys.path.insert(0, args.probe_dir)
    import wheel_probe  # type: ignore[import-not-found]

    log = wheel_probe.LogCapture(echo=False)
    log.install()
    from llama_cpp import Llama, diagnostics  # type: ignore[import-not-found]

    n_prompt: int = args.n_prompt
    n_gen: int = args.n_gen
    models: dict[str, Any] = {}
    ready: dict[str, Any] = {}
    for slot in slots:
        mark = log.mark()
        started = time.perf_counter()
        models[slot] = Llama(
            model_path=args.model,
            n_ctx=n_prompt + n_gen + 16,
            n_batch=n_prompt,
            n_ubatch=n_prompt,
            n_threads=args.threads,
            n_threads_batch=args.threads,
            seed=0,
            verbose=False,
            use_extra_bufts=slot == "on",
        )
        repacked = wheel_probe.oracle().repacked_tensors(log.since(mark))
        ready[slot] = {
            "load_seconds": time.perf_counter() - started,
            "repacked": len(repacked),
            "layouts": sorted(set(repacked.values())),
        }
    n_vocab = next(iter(models.values())).n_vocab()
    prompt = _tokens(n_prompt, n_vocab, 0)
    generated = _tokens(n_gen, n_vocab, 1)

    def pp(llm: Any) -> float:
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        return n_prompt / (time.perf_counter() - t0)

    def tg(llm: Any) -> float:
        llm.reset()
        t0 = time.perf_counter()
        for token in generated:
            llm.eval([token])
        return n_gen / (time.perf_counter() - t0)

    passes = {"pp": pp, "tg": tg}
    for llm in models.values():
        pp(llm), tg(llm)  # warm-up, not recorded
    info = diagnostics.collect()
    keep = ("variant", "library", "fixed_isa", "variant_scores", "q4_0_repack_layout", "system_info")
    print("READY " + json.dumps({"slots": ready, **{k: info[k] for k in keep}}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if words == ["quit"]:
            break
        if len(words) != 2 or words[0] not in passes or words[1] not in models:
            print(f"worker: bad command {line.strip()!r}; expected 'pp|tg {'|'.join(models)}' or 'quit'",
                  file=sys.stderr, flush=True)
            return 2
        print("PASS " + json.dumps({"rate": passes[words[0]](models[words[1]])}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
