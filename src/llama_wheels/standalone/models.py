"""Tiny llama-architecture GGUF models for proving a wheel's repacking, for every type ggml repacks.

This module is deliberately standalone (stdlib + numpy + gguf only): the same file is imported as
``llama_wheels.standalone.models``, copied next to ``wheel_tests/`` for cibuildwheel, and run inside an emulated
aarch64 Python. Do not import anything else from ``llama_wheels`` here.

Every spec writes a small, valid llama model (SentencePiece-style vocabulary with byte fallback, unique
tokens, random weights from a fixed seed) in well under a second. What ggml's CPU repack does with each
weight depends only on its type and its row count ``ne[1]`` (``ne[0]`` is always a multiple of the block
size 32): ``weight_tensors`` lists the shapes, ``file_tensors`` the types as a written file holds them.

gguf-py writes Q4_0, Q8_0 and MXFP4 itself. The K-quants and IQ4_NL come from llama.cpp's real quantizer:
a spec with ``quantize`` set is written as F32 here, and the wheel under test turns it into that llama.cpp
file type with ``llama_model_quantize`` (``wheel_tests/wheel_probe.py``), which picks each tensor's type
itself (a Q4_K_M mix holds Q4_K and Q6_K tensors; a K-quant row not a multiple of the 256-wide super-block
falls back to another type). So the types of a quantized model are read from its file, never assumed.

CLI: ``python -m llama_wheels.standalone.models SPEC OUT`` or ``python models.py SPEC OUT``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType, TokenType
from gguf.quants import quantize

WEIGHT_TYPES = ("Q4_0", "Q8_0", "MXFP4", "F16", "F32")  # what gguf-py writes
CONTEXT_LENGTH = 256
RMS_EPS = 1e-5
BOS_ID = 1
EOS_ID = 2
UNK_ID = 0
_N_SPECIAL = 3
_N_BASE_TOKENS = _N_SPECIAL + 256  # <unk> <s> </s> + one token per byte
_BLOCK = 32  # Q4_0 / Q8_0 block size along ne[0]
_FILE_TYPES = {
    "Q4_0": LlamaFileType.MOSTLY_Q4_0,
    "Q8_0": LlamaFileType.MOSTLY_Q8_0,
    "MXFP4": LlamaFileType.MOSTLY_MXFP4_MOE,
    "F16": LlamaFileType.MOSTLY_F16,
    "F32": LlamaFileType.ALL_F32,
}


@dataclass(frozen=True)
class ModelSpec:
    """Shape of a tiny llama model. All 2D weights use ``weight_type``; norms are F32. With ``quantize``
    (a llama.cpp file type: ``LLAMA_FTYPE_MOSTLY_<quantize>``, e.g. ``"Q4_K_M"``) the model is written as F32
    and the wheel's own quantizer makes the tested file from it."""

    name: str
    n_vocab: int
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    weight_type: str  # "Q4_0" | "Q8_0" | "F16" | "F32"
    output_tensor: bool  # separate output.weight; False = tied to token_embd.weight
    seed: int
    quantize: str | None = None

    def __post_init__(self) -> None:
        if self.weight_type not in WEIGHT_TYPES:
            raise ValueError(f"{self.name}: weight_type {self.weight_type!r} is not one of {WEIGHT_TYPES}")
        if self.n_vocab < _N_BASE_TOKENS:
            raise ValueError(f"{self.name}: n_vocab {self.n_vocab} < {_N_BASE_TOKENS} (specials + bytes)")
        if min(self.n_embd, self.n_ff, self.n_layer, self.n_head, self.n_head_kv) < 1:
            raise ValueError(f"{self.name}: every size must be positive")
        if self.n_embd % self.n_head or self.n_head % self.n_head_kv:
            raise ValueError(f"{self.name}: n_head must divide n_embd and n_head_kv must divide n_head")
        if self.head_dim % 2:
            raise ValueError(f"{self.name}: head dimension {self.head_dim} must be even for RoPE")
        if self.quantize is not None and self.weight_type != "F32":
            raise ValueError(f"{self.name}: the quantizer's source must be F32, not {self.weight_type}")
        if (self.weight_type not in ("F16", "F32") or self.quantize) and (self.n_embd % _BLOCK or self.n_ff % _BLOCK):
            raise ValueError(
                f"{self.name}: n_embd and n_ff must be multiples of {_BLOCK} for {self.quantize or self.weight_type}"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def n_embd_kv(self) -> int:
        return self.head_dim * self.n_head_kv


@dataclass(frozen=True)
class WeightTensor:
    """One tensor as ggml sees it: ``ne0`` is the row length, ``ne1`` the row count.

    ``is_matmul_weight`` marks the repack candidates: 2D weights that llama.cpp multiplies with MUL_MAT.
    ``token_embd.weight`` is read with GET_ROWS and stays in the plain CPU buffer, but when the model has
    no ``output.weight`` llama.cpp loads a second copy of it (same name) as the output projection, and that
    copy *is* a MUL_MAT weight: ggml logs ``repack tensor token_embd.weight`` for it.
    """

    name: str
    ne0: int
    ne1: int
    ggml_type: str  # as written by gguf-py: one of WEIGHT_TYPES; for a file, the type it holds
    is_matmul_weight: bool


SPECS: Mapping[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        # Every row count a multiple of 8: every MUL_MAT weight is eligible for every Q4_0 layout.
        # Tied output: llama.cpp repacks its output copy of token_embd.weight.
        ModelSpec("q4_0", 264, 64, 128, 2, 4, 2, "Q4_0", output_tensor=False, seed=1),
        ModelSpec("q4_0-output", 264, 64, 128, 2, 4, 2, "Q4_0", output_tensor=True, seed=2),
        # attn_k/attn_v have 12 rows (head_dim 12, one KV head): a multiple of 4 but not 8, so the
        # 8-row layout (q4_0_8x8) must skip them while 4-row layouts (q4_0_4x4/4x8) take them.
        # output.weight has 262 rows: a multiple of neither, no Q4_0 layout may take it.
        ModelSpec("q4_0-odd-rows", 262, 96, 128, 2, 8, 1, "Q4_0", output_tensor=True, seed=3),
        ModelSpec("q8_0", 264, 64, 128, 2, 4, 2, "Q8_0", output_tensor=True, seed=4),
        ModelSpec("f16", 264, 64, 128, 2, 4, 2, "F16", output_tensor=True, seed=5),
        # MXFP4 (4x4 only): 12-row attn_k/attn_v take it, the 262-row output cannot.
        ModelSpec("mxfp4", 262, 96, 128, 2, 8, 1, "MXFP4", output_tensor=True, seed=8),
        # From the quantizer. K-quant layouts (8x4, 8x8) all interleave 8 rows. Q4_K_M and Q5_K_M mix in
        # Q6_K (attn_v and ffn_down of some layers, the output); the 268-row output (a multiple of 4, not 8)
        # stays unrepacked. 256-wide rows are one K-quant super-block.
        ModelSpec("q4_k_m", 268, 256, 512, 2, 8, 2, "F32", output_tensor=True, seed=9, quantize="Q4_K_M"),
        ModelSpec("q5_k_m", 268, 256, 512, 2, 8, 2, "F32", output_tensor=True, seed=10, quantize="Q5_K_M"),
        # All Q6_K, tied output (its 264-row output copy is repacked); ffn_down's 384-wide rows are no whole
        # number of super-blocks, so the quantizer gives them another type.
        ModelSpec("q6_k", 264, 256, 384, 2, 8, 2, "F32", output_tensor=False, seed=11, quantize="Q6_K"),
        # IQ4_NL (4x4 only): the 12-row attn_k/attn_v are repacked, the 262-row output is not.
        ModelSpec("iq4_nl", 262, 96, 128, 2, 8, 1, "F32", output_tensor=True, seed=12, quantize="IQ4_NL"),
        # Q1_0 (128-wide blocks; 4x8 with i8mm, 4x4 with dotprod): the 268-row output takes a 4-row layout.
        ModelSpec("q1_0", 268, 256, 512, 2, 8, 2, "F32", output_tensor=True, seed=13, quantize="Q1_0"),
    )
}

# Unquantized source for llama-quantize (proving `llama-wheels convert-model` against the real old
# Q4_0_4_4/Q4_0_4_8/Q4_0_8_8 writer). Not in SPECS: no wheel test runs it. attn_k/attn_v have 12 rows,
# which Q4_0_8_8 cannot interleave: llama-quantize falls back to Q4_0 for them.
F32_SPEC = ModelSpec("f32", 264, 96, 128, 2, 8, 1, "F32", output_tensor=True, seed=6)


def weight_tensors(spec: ModelSpec) -> list[WeightTensor]:
    """Every tensor of the model, in file order, with its ggml shape and type."""
    wt = spec.weight_type
    tied = not spec.output_tensor
    tensors = [WeightTensor("token_embd.weight", spec.n_embd, spec.n_vocab, wt, is_matmul_weight=tied)]
    for i in range(spec.n_layer):
        p = f"blk.{i}."
        tensors += [
            WeightTensor(p + "attn_norm.weight", spec.n_embd, 1, "F32", False),
            WeightTensor(p + "attn_q.weight", spec.n_embd, spec.n_embd, wt, True),
            WeightTensor(p + "attn_k.weight", spec.n_embd, spec.n_embd_kv, wt, True),
            WeightTensor(p + "attn_v.weight", spec.n_embd, spec.n_embd_kv, wt, True),
            WeightTensor(p + "attn_output.weight", spec.n_embd, spec.n_embd, wt, True),
            WeightTensor(p + "ffn_norm.weight", spec.n_embd, 1, "F32", False),
            WeightTensor(p + "ffn_gate.weight", spec.n_embd, spec.n_ff, wt, True),
            WeightTensor(p + "ffn_up.weight", spec.n_embd, spec.n_ff, wt, True),
            WeightTensor(p + "ffn_down.weight", spec.n_ff, spec.n_embd, wt, True),
        ]
    tensors.append(WeightTensor("output_norm.weight", spec.n_embd, 1, "F32", False))
    if spec.output_tensor:
        tensors.append(WeightTensor("output.weight", spec.n_embd, spec.n_vocab, wt, True))
    return tensors


def file_tensors(spec: ModelSpec, path: str | os.PathLike[str]) -> list[WeightTensor]:
    """``weight_tensors(spec)`` with each tensor's type as the file at ``path`` holds it (a quantized spec's
    types are the quantizer's choice). The file must hold exactly the spec's tensors, in their shapes."""
    from gguf import GGUFReader

    held = {t.name: (t.tensor_type.name, [int(n) for n in t.shape]) for t in GGUFReader(path).tensors}
    out = []
    for t in weight_tensors(spec):
        if t.name not in held:
            raise ValueError(f"{path}: no tensor {t.name}, which model {spec.name} has")
        ggml_type, shape = held.pop(t.name)
        if shape[:2] != ([t.ne0, t.ne1] if t.ne1 > 1 else [t.ne0]):
            raise ValueError(f"{path}: {t.name} has shape {shape}, model {spec.name} says {t.ne0}x{t.ne1}")
        out.append(WeightTensor(t.name, t.ne0, t.ne1, ggml_type, t.is_matmul_weight))
    if held:
        raise ValueError(f"{path}: tensors model {spec.name} does not have: {', '.join(sorted(held))}")
    return out


def vocabulary(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    """Unique SentencePiece-style tokens: specials, 256 byte tokens, then made-up word pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    i = 0
    while len(tokens) < n_vocab:
        tokens.append("\u2581" + _letters(i))
        types.append(TokenType.NORMAL)
        i += 1
    scores = [0.0] * _N_BASE_TOKENS + [-float(k) for k in range(1, n_vocab - _N_BASE_TOKENS + 1)]
    if len(set(tokens)) != len(tokens):
        raise AssertionError("vocabulary produced duplicate tokens")
    return tokens, scores, [int(t) for t in types]


def _letters(i: int) -> str:
    """Bijective base-26: 0 -> "a", 25 -> "z", 26 -> "aa", ... (distinct for distinct i)."""
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(ord("a") + r) + out
    return out


def _weight(rng: np.random.Generator, t: WeightTensor) -> np.ndarray:
    if t.ggml_type == "F32" and t.ne1 == 1:  # RMS norm weights: near 1 so activations keep their scale
        return (1.0 + 0.1 * rng.standard_normal(t.ne0)).astype(np.float32)
    # Rows of the output projection see unit-RMS activations: std 3/sqrt(n) gives logits with std ~3,
    # enough spread that greedy decoding is decisive but not stuck on one token.
    scale = 3.0 / float(np.sqrt(t.ne0))
    return (rng.standard_normal((t.ne1, t.ne0)) * scale).astype(np.float32)


def _encode(data: np.ndarray, ggml_type: str) -> tuple[np.ndarray, GGMLQuantizationType | None]:
    if ggml_type == "F32":
        return data, None
    if ggml_type == "F16":
        return data.astype(np.float16), None
    qtype = GGMLQuantizationType[ggml_type]
    return quantize(data, qtype), qtype


def _add_tokenizer(writer: GGUFWriter, n_vocab: int) -> None:
    """A llama (SentencePiece-style) vocabulary of ``n_vocab`` unique tokens with BOS/EOS/UNK ids."""
    tokens, scores, types = vocabulary(n_vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_unk_token_id(UNK_ID)


def write_model(spec: ModelSpec, path: str | os.PathLike[str]) -> Path:
    """Write ``spec`` as a GGUF file at ``path`` atomically (temp file in the same dir, then rename)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer = GGUFWriter(tmp, "llama")
        writer.add_name(f"llama-wheels-{spec.name}")
        writer.add_file_type(int(_FILE_TYPES[spec.weight_type]))
        writer.add_vocab_size(spec.n_vocab)
        writer.add_context_length(CONTEXT_LENGTH)
        writer.add_embedding_length(spec.n_embd)
        writer.add_feed_forward_length(spec.n_ff)
        writer.add_block_count(spec.n_layer)
        writer.add_head_count(spec.n_head)
        writer.add_head_count_kv(spec.n_head_kv)
        writer.add_layer_norm_rms_eps(RMS_EPS)
        writer.add_rope_dimension_count(spec.head_dim)
        writer.add_rope_freq_base(10000.0)
        _add_tokenizer(writer, spec.n_vocab)
        writer.add_add_bos_token(True)
        for t in weight_tensors(spec):
            data, raw_dtype = _encode(_weight(rng, t), t.ggml_type)
            writer.add_tensor(t.name, data, raw_dtype=raw_dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.chmod(0o644)  # mkstemp creates 0600; a model is an ordinary readable file
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


T5_REL_BUCKETS = 32
UNUSED_TENSOR = "dec.blk.0.cross_attn_rel_b"


def write_t5_model(path: str | os.PathLike[str], n_vocab: int = 264, n_embd: int = 64, n_ff: int = 128,
                   n_layer: int = 2, n_head: int = 4, seed: int = 7) -> Path:
    """A tiny T5 (encoder-decoder) GGUF with Q4_0 matrices, written atomically; for loading only.

    Like t5-small it carries ``dec.blk.0.cross_attn_rel_b``, a tensor llama.cpp loads but no op uses
    (GGML_OP_NONE): the case that must stay out of the CPU repack buffer.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    head_dim = n_embd // n_head
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)

    def matrix(rows: int, cols: int) -> tuple[np.ndarray, GGMLQuantizationType]:
        data = (rng.standard_normal((rows, cols)) * (3.0 / float(np.sqrt(cols)))).astype(np.float32)
        return quantize(data, GGMLQuantizationType.Q4_0), GGMLQuantizationType.Q4_0

    def norm() -> tuple[np.ndarray, None]:
        return (1.0 + 0.1 * rng.standard_normal(n_embd)).astype(np.float32), None

    def rel_b() -> tuple[np.ndarray, None]:
        return (0.1 * rng.standard_normal((T5_REL_BUCKETS, n_head))).astype(np.float32), None

    try:
        writer = GGUFWriter(tmp, "t5")
        writer.add_name("llama-wheels-t5")
        writer.add_file_type(int(LlamaFileType.MOSTLY_Q4_0))
        writer.add_vocab_size(n_vocab)
        writer.add_context_length(CONTEXT_LENGTH)
        writer.add_embedding_length(n_embd)
        writer.add_feed_forward_length(n_ff)
        writer.add_block_count(n_layer)
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_head)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_layer_norm_rms_eps(RMS_EPS)
        writer.add_relative_attn_buckets_count(T5_REL_BUCKETS)
        writer.add_decoder_start_token_id(UNK_ID)
        _add_tokenizer(writer, n_vocab)
        tensors = {"token_embd.weight": matrix(n_vocab, n_embd), "enc.output_norm.weight": norm(),
                   "dec.output_norm.weight": norm(), "output.weight": matrix(n_vocab, n_embd)}
        for i in range(n_layer):
            for side, attns in (("enc", ("attn",)), ("dec", ("attn", "cross_attn"))):
                p = f"{side}.blk.{i}."
                for a in attns:
                    tensors[p + a + "_norm.weight"] = norm()
                    if i == 0:
                        tensors[p + a + "_rel_b.weight"] = rel_b()
                    for m in "qkvo":
                        tensors[p + f"{a}_{m}.weight"] = matrix(n_embd, n_embd)
                tensors[p + "ffn_norm.weight"] = norm()
                tensors[p + "ffn_up.weight"] = matrix(n_ff, n_embd)
                tensors[p + "ffn_down.weight"] = matrix(n_embd, n_ff)
        for name, (data, raw_dtype) in tensors.items():
            writer.add_tensor(name, data, raw_dtype=raw_dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.chmod(0o644)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a tiny llama GGUF model.")
    parser.add_argument("spec", choices=sorted(SPECS), help="named model spec (a quantized one: its F32 source)")
    parser.add_argument("out", type=Path, help="output .gguf path")
    args = parser.parse_args(argv)
    path = write_model(SPECS[args.spec], args.out)
    print(f"{path} {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
