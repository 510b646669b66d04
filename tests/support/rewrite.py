"""A real wheel with some of its libraries swapped: the input of the audit's sabotage tests."""

from __future__ import annotations

import zipfile
from pathlib import Path

LIB = "llama_cpp/lib"


def rewritten(wheel: Path, out: Path, replace: dict[str, str] | None = None,
              rename: dict[str, str] | None = None) -> Path:
    """A copy of ``wheel`` whose member ``replace`` keys hold the bytes of the values (names in ``LIB``)."""
    out.mkdir(parents=True, exist_ok=True)
    copy = out / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(copy, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            name = info.filename.removeprefix(f"{LIB}/")
            data = src.read(f"{LIB}/{(replace or {})[name]}" if name in (replace or {}) else info.filename)
            dst.writestr((rename or {}).get(info.filename, info.filename), data)
    return copy
