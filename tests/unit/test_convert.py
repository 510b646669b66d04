"""convert-model: the removed interleaved Q4_0 types back to plain Q4_0, losslessly, refusing the unknown.

Fast tests on our own files: the interleaving is checked against a literal transcription of
make_block_q4_0x4/x8 (llama.cpp 74d73dc85), every old type round-trips byte for byte, and every kind of
bad input ends in one line and exit code 2 with nothing written. The proof against files written by the
real old llama-quantize is tests/integration/emulated/test_oldquant.py.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest

from llama_wheels.core.errors import UserError
from llama_wheels.gguf_tools import convert
from llama_wheels.standalone import models
from tests.support.checkout import cli


def make_block(blocks: list[bytes], kind: convert.Interleave) -> bytes:
    """make_block_q4_0x4 / make_block_q4_0x8 of ggml-aarch64.c, transcribed literally (xor_mask 0x88)."""
    nr, bl = kind.rows, kind.width
    out = bytearray(b"".join(b[:2] for b in blocks))
    for i in range(16 * nr):
        src_offset = (i // (nr * bl)) * bl + i % bl
        src_id = (i % (nr * bl)) // bl
        out.append(blocks[src_id][2 + src_offset] ^ 0x88)
    return bytes(out)


@pytest.fixture(scope="module")
def q4_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # odd rows: attn_k/attn_v have 12 rows (4-row layouts only), output.weight 262 (no layout at all)
    return models.write_model(models.SPECS["q4_0-odd-rows"], tmp_path_factory.mktemp("m") / "q4_0.gguf")


@pytest.mark.parametrize("kind", convert.OLD_TYPES.values(), ids=lambda k: k.name)
def test_interleave_matches_the_old_ggml_code(kind: convert.Interleave) -> None:
    rng = np.random.default_rng(kind.ggml_type)
    blocks_per_row, rows = 3, kind.rows * 2
    plain_blocks = [[rng.integers(0, 256, 18, dtype=np.uint8).tobytes() for _ in range(blocks_per_row)]
                    for _ in range(rows)]
    plain = b"".join(b for row in plain_blocks for b in row)
    expected = b"".join(
        make_block([plain_blocks[g * kind.rows + r][x] for r in range(kind.rows)], kind)
        for g in range(rows // kind.rows) for x in range(blocks_per_row)
    )
    dims = (32 * blocks_per_row, rows)
    assert convert.interleave(plain, kind, dims) == expected
    assert convert.deinterleave(expected, kind, dims) == plain


@pytest.mark.parametrize("kind", convert.OLD_TYPES.values(), ids=lambda k: k.name)
def test_old_file_converts_back_byte_for_byte(q4_model: Path, tmp_path: Path,
                                              kind: convert.Interleave) -> None:
    old, back = tmp_path / "old.gguf", tmp_path / "back.gguf"
    interleaved = convert.to_old_format(q4_model, old, kind)
    layout = convert.read_layout(old)
    assert layout.file_type == kind.file_type
    assert {t.name for t in layout.tensors if t.ggml_type == kind.ggml_type} == set(interleaved)
    assert ("blk.0.attn_k.weight" in interleaved) == (kind.rows == 4)  # 12 rows
    assert "output.weight" not in interleaved  # 262 rows
    assert old.read_bytes() != q4_model.read_bytes()
    converted = convert.convert_model(old, back)
    assert sorted(name for name, _ in converted) == sorted(interleaved)
    assert {k for _, k in converted} == {kind.name}
    assert back.read_bytes() == q4_model.read_bytes()


def test_cli_converts_and_says_what_it_did(q4_model: Path, tmp_path: Path) -> None:
    old, back = tmp_path / "old.gguf", tmp_path / "out" / "back.gguf"
    back.parent.mkdir()
    convert.to_old_format(q4_model, old, convert.OLD_TYPES[31])
    result = cli("convert-model", str(old), str(back), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "14 tensors" in result.stdout and "Q4_0_4_4" in result.stdout
    assert back.read_bytes() == q4_model.read_bytes()
    assert not (tmp_path / "logs").exists(), "convert-model must not litter the user's directory"


def _broken(tmp_path: Path, q4_model: Path, how: str) -> Path:
    path = tmp_path / f"{how}.gguf"
    old = tmp_path / "old.gguf"
    convert.to_old_format(q4_model, old, convert.OLD_TYPES[33])
    data = bytearray(old.read_bytes())
    if how == "not-gguf":
        data[:4] = b"GGML"
    elif how == "version-1":
        data[4:8] = struct.pack("<I", 1)
    elif how == "big-endian":
        data[4:8] = struct.pack(">I", 3)
    elif how == "truncated-header":
        data = data[:200]
    elif how == "truncated-data":
        data = data[: len(data) - 1000]
    elif how == "no-old-tensors":
        data = bytearray(q4_model.read_bytes())
    elif how == "bad-shape":
        layout = convert.read_layout(old)
        t = next(t for t in layout.tensors if t.ggml_type == 33)
        data[t.type_field : t.type_field + 4] = struct.pack("<I", 31)  # 8x8 rows are fine for 4x4 ...
        k = next(t for t in layout.tensors if t.name == "output.weight")  # ... but 262 rows are not
        data[k.type_field : k.type_field + 4] = struct.pack("<I", 31)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("not-gguf", "no GGUF magic"),
        ("version-1", "GGUF version 1"),
        ("big-endian", "big-endian"),
        ("truncated-header", "truncated"),
        ("truncated-data", "extends past the end of the file"),
        ("no-old-tensors", "nothing to convert"),
        ("bad-shape", "output.weight is Q4_0_4_4 with shape [96, 262]"),
    ],
)
def test_refuses_what_it_does_not_understand(q4_model: Path, tmp_path: Path, how: str, message: str) -> None:
    bad = _broken(tmp_path, q4_model, how)
    out = tmp_path / "out.gguf"
    with pytest.raises(UserError, match=re.escape(message)):
        convert.convert_model(bad, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.gguf")] == []  # no temp left
    result = cli("convert-model", str(bad), str(out), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llama-wheels: error: ") and message in lines[0]
    assert not out.exists()


def test_refuses_to_overwrite_its_input(q4_model: Path, tmp_path: Path) -> None:
    old = tmp_path / "old.gguf"
    convert.to_old_format(q4_model, old, convert.OLD_TYPES[32])
    before = old.read_bytes()
    with pytest.raises(UserError, match="OUT must differ from IN"):
        convert.convert_model(old, old)
    assert old.read_bytes() == before


def test_missing_input_is_a_user_error(tmp_path: Path) -> None:
    result = cli("convert-model", str(tmp_path / "nope.gguf"), str(tmp_path / "out.gguf"), cwd=tmp_path)
    assert result.returncode == 2
    assert "nope.gguf: cannot read it" in result.stderr

