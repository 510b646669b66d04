"""The benchmark model: a random llama-architecture Q4_0 GGUF, generated at benchmark time and cached.

Big enough to be compute-bound (full size ~165 MB, ~290 M parameters, every weight Q4_0 with row counts
that are multiples of 8, so all of them are repackable to q4_0_8x8); never committed. The file lives in
the llama-wheels cache under a name derived from its parameters and the generator's code, so a changed
shape or generator writes a new file and an unchanged one is reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
from pathlib import Path

from llama_wheels.core.cache import Cache, hash_key
from llama_wheels.standalone import models
from llama_wheels.standalone.models import ModelSpec, write_model

FULL = ModelSpec(
    "bench-q4_0-165mb",
    n_vocab=32000,
    n_embd=1024,
    n_ff=2816,
    n_layer=20,
    n_head=16,
    n_head_kv=16,
    weight_type="Q4_0",
    output_tensor=False,
    seed=8,
)
SMOKE = ModelSpec(
    "bench-q4_0-smoke",
    n_vocab=512,
    n_embd=128,
    n_ff=256,
    n_layer=2,
    n_head=4,
    n_head_kv=4,
    weight_type="Q4_0",
    output_tensor=False,
    seed=9,
)


def parameters(spec: ModelSpec) -> int:
    """Weights in the file (tied output: token_embd counts once)."""
    return sum(t.ne0 * t.ne1 for t in models.weight_tensors(spec))


def ensure_model(spec: ModelSpec, cache: Cache) -> Path:
    """The cached GGUF for ``spec``, written (atomically, by models.write_model) if missing."""
    generator = hashlib.sha256(Path(models.__file__).read_bytes()).hexdigest()
    key = hash_key([repr(dataclasses.astuple(spec)), generator, importlib.metadata.version("gguf")])
    path = cache.dir("benchmark-models") / f"{spec.name}-{key}.gguf"
    if not path.is_file():
        write_model(spec, path)
    return path
