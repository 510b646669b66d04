"""``llama-wheels convert-model IN OUT``: old interleaved Q4_0 GGUF files back to plain Q4_0.

llama.cpp before ce8784bdb (llama-cpp-python <= 0.3.3) had three tensor types that stored Q4_0 blocks
pre-interleaved for its ARM/AVX kernels: Q4_0_4_4 (ggml type 31), Q4_0_4_8 (32) and Q4_0_8_8 (33). Later
releases dropped them (a plain Q4_0 file is re-laid at load time instead) and refuse to load such files.
The interleaving is a pure permutation of Q4_0 blocks, so it can be undone without touching a single
quantized value. From ``quantize_q4_0_nr_bl`` / ``make_block_q4_0x4`` / ``make_block_q4_0x8``
(ggml/src/ggml-aarch64.c of llama.cpp 74d73dc85, vendored by llama-cpp-python 0.3.2):

- rows are taken in groups of ``nr`` (4, or 8 for Q4_0_8_8); for every block column ``x`` of a group,
  one interleaved block holds the ``nr`` fp16 scales ``d[r]`` of rows ``r`` at column ``x``, then
  ``16 * nr`` quant bytes;
- quant byte ``i`` of that block is byte ``(i // (nr*bl)) * bl + i % bl`` of row ``(i % (nr*bl)) // bl``
  XOR ``0x88`` (each nibble's sign bit flipped), with ``bl`` = 4 for Q4_0_4_4 and 8 otherwise;
- a block is 18 bytes per 32 weights either way, so every tensor keeps its size and offset.

The rewrite copies the file byte for byte except the interleaved tensors' data, their type fields
(31/32/33 -> 2, Q4_0) and ``general.file_type`` (33/34/35 -> 2, MOSTLY_Q4_0). It understands the GGUF
container itself (versions 2 and 3, little-endian) rather than going through gguf-py, whose reader no
longer knows types 31-33. Anything it does not understand is refused with a one-line UserError.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from llama_wheels.core.cache import atomic_path
from llama_wheels.core.errors import UserError

GGUF_MAGIC = b"GGUF"
Q4_0 = 2
MOSTLY_Q4_0 = 2
QK4_0 = 32
BLOCK_BYTES = 18  # fp16 scale + 16 bytes of nibbles per 32 weights


@dataclass(frozen=True)
class Interleave:
    """One removed type: ``rows`` interleaved per block, ``width`` bytes taken from a row at a time."""

    name: str
    ggml_type: int
    file_type: int  # llama_ftype of a file whose weights are mostly this type
    rows: int
    width: int


OLD_TYPES: Mapping[int, Interleave] = {
    t.ggml_type: t
    for t in (
        Interleave("Q4_0_4_4", 31, 33, rows=4, width=4),
        Interleave("Q4_0_4_8", 32, 34, rows=4, width=8),
        Interleave("Q4_0_8_8", 33, 35, rows=8, width=8),
    )
}
OLD_FILE_TYPES = {t.file_type for t in OLD_TYPES.values()}

# GGUF metadata value types: fixed-size scalars (struct format), 8 = string, 9 = array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 4


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # ne[0], ne[1], ...
    ggml_type: int
    offset: int  # relative to the data section
    type_field: int  # absolute file offset of the u32 type, for rewriting it

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n


@dataclass(frozen=True)
class GGUFLayout:
    version: int
    tensors: tuple[TensorInfo, ...]
    data_start: int  # absolute offset of the (aligned) data section
    file_size: int
    file_type: int | None  # general.file_type, if present as an integer
    file_type_field: tuple[int, str] | None  # (absolute offset, struct format) of its value


class _Reader:
    def __init__(self, fh: BinaryIO, path: Path, size: int) -> None:
        self.fh, self.path, self.size = fh, path, size

    def bad(self, what: str) -> UserError:
        return UserError(f"{self.path}: {what}; not a GGUF file this tool understands, nothing written")

    def take(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise self.bad(f"truncated at byte {self.fh.tell()}")
        return data

    def unpack(self, fmt: str) -> int | float | bool:
        value: int | float | bool = struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]
        return value

    def u32(self) -> int:
        return int(self.unpack("I"))

    def u64(self) -> int:
        return int(self.unpack("Q"))

    def string(self) -> str:
        n = self.u64()
        if n > self.size:
            raise self.bad(f"string length {n} at byte {self.fh.tell() - 8} exceeds the file")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise self.bad(f"string at byte {self.fh.tell() - n} is not UTF-8") from None

    def skip_value(self, vtype: int, depth: int = 0) -> None:
        if vtype in _SCALARS:
            self.take(struct.calcsize(_SCALARS[vtype]))
        elif vtype == _STRING:
            self.string()
        elif vtype == _ARRAY and depth == 0:
            item_type, count = self.u32(), self.u64()
            if item_type in _SCALARS:
                n = count * struct.calcsize(_SCALARS[item_type])
                if n > self.size:
                    raise self.bad(f"array of {count} items exceeds the file")
                self.fh.seek(n, os.SEEK_CUR)
            else:
                for _ in range(count):
                    self.skip_value(item_type, depth + 1)
        else:
            raise self.bad(f"unknown metadata value type {vtype} at byte {self.fh.tell() - 4}")


def read_layout(path: Path) -> GGUFLayout:
    """Parse ``path``'s GGUF header, metadata and tensor infos (no tensor data is read)."""
    try:
        size = path.stat().st_size
        fh = path.open("rb")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; pass the GGUF model to convert") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror}); pass a readable GGUF file") from None
    with fh:
        r = _Reader(fh, path, size)
        if r.take(4) != GGUF_MAGIC:
            raise r.bad("no GGUF magic")
        version = r.u32()
        if version not in (2, 3):
            swapped = struct.unpack(">I", struct.pack("<I", version))[0]
            hint = " (a big-endian file)" if swapped in (2, 3) else ""
            raise r.bad(f"GGUF version {version}{hint}, only little-endian versions 2 and 3 are supported")
        n_tensors, n_kv = r.u64(), r.u64()
        alignment = 32
        file_type: int | None = None
        file_type_field: tuple[int, str] | None = None
        for _ in range(n_kv):
            key = r.string()
            vtype = r.u32()
            integer = vtype in _SCALARS and vtype not in (6, 7, 12)  # not f32, bool, f64
            if key in ("general.alignment", "general.file_type") and integer:
                where = fh.tell()
                value = int(r.unpack(_SCALARS[vtype]))
                if key == "general.alignment":
                    if value <= 0 or value & (value - 1):
                        raise r.bad(f"general.alignment {value} is not a power of two")
                    alignment = value
                else:
                    file_type, file_type_field = value, (where, _SCALARS[vtype])
            else:
                r.skip_value(vtype)
        tensors = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.u32()
            if not 1 <= n_dims <= _MAX_DIMS:
                raise r.bad(f"tensor {name} has {n_dims} dimensions")
            dims = tuple(r.u64() for _ in range(n_dims))
            type_field = fh.tell()
            tensors.append(TensorInfo(name=name, dims=dims, ggml_type=r.u32(), offset=r.u64(),
                                      type_field=type_field))
        data_start = -(-fh.tell() // alignment) * alignment
    if data_start > size:
        raise UserError(f"{path}: truncated before its tensor data; nothing written")
    return GGUFLayout(version=version, tensors=tuple(tensors), data_start=data_start, file_size=size,
                      file_type=file_type, file_type_field=file_type_field)


def _permutation(kind: Interleave) -> np.ndarray:
    """``plain[r * 16 + k] = interleaved[perm[r * 16 + k]]`` for one interleaved block's quant bytes."""
    nr, bl = kind.rows, kind.width
    perm = np.empty(16 * nr, dtype=np.intp)
    for i in range(16 * nr):
        row = (i % (nr * bl)) // bl
        byte = (i // (nr * bl)) * bl + i % bl
        perm[row * 16 + byte] = i
    return perm


def deinterleave(data: bytes, kind: Interleave, dims: tuple[int, ...]) -> bytes:
    """Plain Q4_0 bytes (row-major blocks) of a ``kind`` tensor of shape ``dims``."""
    blocks_per_row = dims[0] // QK4_0
    rows = len(data) // (blocks_per_row * BLOCK_BYTES)
    nr = kind.rows
    raw = np.frombuffer(data, dtype=np.uint8).reshape(rows // nr, blocks_per_row, BLOCK_BYTES * nr)
    scales = raw[:, :, : 2 * nr].reshape(rows // nr, blocks_per_row, nr, 2)
    quants = raw[:, :, 2 * nr :][:, :, _permutation(kind)] ^ 0x88
    quants = quants.reshape(rows // nr, blocks_per_row, nr, 16)
    plain = np.concatenate([scales, quants], axis=3).transpose(0, 2, 1, 3)  # (group, row, block, 18)
    return np.ascontiguousarray(plain).tobytes()


def interleave(data: bytes, kind: Interleave, dims: tuple[int, ...]) -> bytes:
    """The inverse of ``deinterleave``: what llama.cpp <= 74d73dc85 stored for plain Q4_0 ``data``."""
    blocks_per_row = dims[0] // QK4_0
    rows = len(data) // (blocks_per_row * BLOCK_BYTES)
    nr = kind.rows
    plain = np.frombuffer(data, dtype=np.uint8).reshape(rows // nr, nr, blocks_per_row, BLOCK_BYTES)
    plain = plain.transpose(0, 2, 1, 3)  # (group, block, row, 18)
    scales = plain[:, :, :, :2].reshape(rows // nr, blocks_per_row, 2 * nr)
    quants = plain[:, :, :, 2:].reshape(rows // nr, blocks_per_row, 16 * nr) ^ 0x88
    inverse = np.argsort(_permutation(kind))
    return np.ascontiguousarray(np.concatenate([scales, quants[:, :, inverse]], axis=2)).tobytes()


def tensor_nbytes(path: Path, t: TensorInfo) -> int:
    """Size of ``t``'s data: the removed types by their block size, every other by gguf-py's table."""
    if t.ggml_type in OLD_TYPES:
        block, size = QK4_0, BLOCK_BYTES
    else:
        try:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType(t.ggml_type)]
        except (ValueError, KeyError):
            raise UserError(f"{path}: tensor {t.name} has ggml type {t.ggml_type}, unknown to this tool; "
                            "nothing written") from None
    if t.n_elements % block:
        raise UserError(f"{path}: tensor {t.name} has {t.n_elements} elements, not whole blocks of {block}; "
                        "nothing written")
    return t.n_elements // block * size


def check_extents(path: Path, layout: GGUFLayout) -> None:
    """Every tensor's data must lie inside the file."""
    for t in layout.tensors:
        if layout.data_start + t.offset + tensor_nbytes(path, t) > layout.file_size:
            raise UserError(f"{path}: tensor {t.name} extends past the end of the file; nothing written")


def _check_tensor(path: Path, layout: GGUFLayout, t: TensorInfo, kind: Interleave) -> int:
    """Validate an interleaved tensor; return its size in bytes."""
    rows = t.n_elements // t.dims[0] if t.dims[0] else 0
    if len(t.dims) < 2 or t.dims[0] % QK4_0 or rows % kind.rows or rows == 0:
        raise UserError(
            f"{path}: tensor {t.name} is {kind.name} with shape {list(t.dims)}, which that type cannot hold "
            f"(rows a multiple of {kind.rows}, row length a multiple of {QK4_0}); nothing written"
        )
    nbytes = t.n_elements // QK4_0 * BLOCK_BYTES
    if layout.data_start + t.offset + nbytes > layout.file_size:
        raise UserError(f"{path}: tensor {t.name} extends past the end of the file; nothing written")
    return nbytes


def convert_model(src: Path, dst: Path) -> list[tuple[str, str]]:
    """Rewrite ``src``'s Q4_0_4_4/Q4_0_4_8/Q4_0_8_8 tensors as Q4_0 into ``dst`` (atomically).

    Returns ``(tensor name, old type name)`` for every tensor converted. Raises UserError, writing
    nothing, for a file that is not a GGUF this module understands or holds none of the old types.
    """
    layout = read_layout(Path(src))
    old = [(t, OLD_TYPES[t.ggml_type]) for t in layout.tensors if t.ggml_type in OLD_TYPES]
    if not old:
        raise UserError(f"{src}: has no Q4_0_4_4, Q4_0_4_8 or Q4_0_8_8 tensors; nothing to convert, "
                        "nothing written")
    check_extents(Path(src), layout)
    file_type = MOSTLY_Q4_0 if layout.file_type in OLD_FILE_TYPES else None
    _rewrite(Path(src), Path(dst), layout, [(t, kind, Q4_0) for t, kind in old], file_type, deinterleave)
    return [(t.name, kind.name) for t, kind in old]


def to_old_format(src: Path, dst: Path, kind: Interleave) -> list[str]:
    """The inverse, for tests: Q4_0 tensors whose row count allows it become ``kind`` (as 0.3.2 did)."""
    layout = read_layout(Path(src))
    chosen = [t for t in layout.tensors if t.ggml_type == Q4_0 and len(t.dims) >= 2
              and (t.n_elements // t.dims[0]) % kind.rows == 0]
    if not chosen:
        raise UserError(f"{src}: no Q4_0 tensor with a row count divisible by {kind.rows}")
    file_type = kind.file_type if layout.file_type == MOSTLY_Q4_0 else None
    _rewrite(Path(src), Path(dst), layout, [(t, kind, kind.ggml_type) for t in chosen], file_type, interleave)
    return [t.name for t in chosen]


def _rewrite(src: Path, dst: Path, layout: GGUFLayout, plan: list[tuple[TensorInfo, Interleave, int]],
             file_type: int | None, transform: Callable[[bytes, Interleave, tuple[int, ...]], bytes]) -> None:
    """Copy ``src`` to ``dst`` atomically, giving each planned tensor its new type and transformed data."""
    if dst.exists() and dst.resolve() == src.resolve():
        raise UserError(f"{dst}: OUT must differ from IN (the conversion writes a new file)")
    if dst.is_dir():
        raise UserError(f"{dst}: is a directory; OUT is the file to write (e.g. {dst / src.name})")
    sizes = {t.name: _check_tensor(src, layout, t, kind) for t, kind, _ in plan}
    with src.open("rb") as fin, atomic_path(dst) as tmp:
        with tmp.open("wb") as fout:
            head = bytearray(fin.read(layout.data_start))
            for t, _, new_type in plan:
                head[t.type_field : t.type_field + 4] = struct.pack("<I", new_type)
            if file_type is not None and layout.file_type_field is not None:
                where, fmt = layout.file_type_field
                head[where : where + struct.calcsize(fmt)] = struct.pack("<" + fmt, file_type)
            fout.write(head)
            position = layout.data_start
            for t, kind, _ in sorted(plan, key=lambda item: item[0].offset):
                start = layout.data_start + t.offset
                if start < position:
                    raise UserError(f"{src}: tensor {t.name} overlaps another tensor's data; nothing written")
                _copy(fin, fout, start - position)
                fout.write(transform(fin.read(sizes[t.name]), kind, t.dims))
                position = start + sizes[t.name]
            _copy(fin, fout, layout.file_size - position)
        tmp.chmod(0o644)


def _copy(fin: BinaryIO, fout: BinaryIO, n: int) -> None:
    while n > 0:
        chunk = fin.read(min(n, 1 << 24))
        if not chunk:
            raise UserError(f"{fin.name}: ended early while copying; nothing written")
        fout.write(chunk)
        n -= len(chunk)


def tensor_bytes(path: Path) -> dict[str, tuple[int, bytes]]:
    """``name -> (ggml type, data bytes)`` of every tensor (for comparing files)."""
    layout = read_layout(path)
    check_extents(path, layout)
    out = {}
    with path.open("rb") as fh:
        for t in layout.tensors:
            fh.seek(layout.data_start + t.offset)
            out[t.name] = (t.ggml_type, fh.read(tensor_nbytes(path, t)))
    return out
