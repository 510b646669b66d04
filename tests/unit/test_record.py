"""The RECORD finalize writes, read by an installer that is not ours: pypa/installer checks every entry's
sha256 and size on read (``WheelFile.validate_record``), then installs the wheel as pip's backend would.

tests/unit/test_provenance.py reads RECORD back with our own csv code; this is the independent reader.
"""

from __future__ import annotations

import re
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile

from llama_wheels.stages.finalize import finalize_wheel
from tests.support.wheelfactory import DIST_INFO, NAME, package_files, raw_wheel, record

LIBS = {"libllama.so": b"\x7fELF fake", "libggml.so": b"\x7fELF other"}


_RECORD = f"{DIST_INFO}/RECORD"


@pytest.fixture
def finalized(tmp_path: Path) -> Path:
    """A wheel as a build tool wrote it (a stale RECORD), then through the finalize stage."""
    raw = raw_wheel(tmp_path / "raw" / NAME, package_files(LIBS))
    (tmp_path / "final").mkdir()
    return finalize_wheel(raw, record(), tmp_path / "final")


def test_installer_validates_and_installs_the_finalized_wheel(finalized: Path, tmp_path: Path) -> None:
    with WheelFile.open(finalized) as source:
        source.validate_record(validate_contents=True)  # raises on any hash or size that does not match
        schemes = {s: str(tmp_path / "installed" / s) for s in ("purelib", "platlib", "scripts", "data",
                                                                 "headers")}
        install(source, SchemeDictionaryDestination(schemes, interpreter=sys.executable, script_kind="posix"),
                {"INSTALLER": b"tests\n"})
    platlib = tmp_path / "installed" / "platlib"  # Root-Is-Purelib: false
    for name, data in LIBS.items():
        assert (platlib / "llama_cpp" / "lib" / name).read_bytes() == data
    assert (platlib / DIST_INFO / "llama_wheels.json").is_file()


def _rewrite(wheel: Path, change: Callable[[dict[str, bytes]], None]) -> Path:
    """``wheel`` with its entries (name -> bytes) changed by ``change``, written beside it."""
    with zipfile.ZipFile(wheel) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    change(entries)
    out = wheel.parent / "sabotaged" / wheel.name
    out.parent.mkdir()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out


def _wrong_hash(entries: dict[str, bytes]) -> None:
    lines = entries[_RECORD].decode().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("llama_cpp/lib/libllama.so,"))
    name, digest, size = lines[row].split(",")
    flipped = "B" if digest[10] == "A" else "A"  # a character in the middle: every bit of it is hash data
    lines[row] = f"{name},{digest[:10]}{flipped}{digest[11:]},{size}"
    entries[_RECORD] = "\n".join([*lines, ""]).encode()


def _wrong_size(entries: dict[str, bytes]) -> None:
    entries[_RECORD] = re.sub(rb"(llama_cpp/lib/libllama\.so,[^,]+),(\d+)",
                              lambda m: m[1] + b"," + str(int(m[2]) + 1).encode(), entries[_RECORD])


def _tampered(entries: dict[str, bytes]) -> None:
    entries["llama_cpp/lib/libllama.so"] = b"\x7fELF other code"


def _unlisted(entries: dict[str, bytes]) -> None:
    entries["llama_cpp/lib/libextra.so"] = b"\x7fELF smuggled in"


@pytest.mark.parametrize(("sabotage", "issue"), [
    (_wrong_hash, r"hash / size of llama_cpp/lib/libllama\.so didn't match RECORD"),
    (_wrong_size, r"hash / size of llama_cpp/lib/libllama\.so didn't match RECORD"),
    (_tampered, r"hash / size of llama_cpp/lib/libllama\.so didn't match RECORD"),
    (_unlisted, r"llama_cpp/lib/libextra\.so is not mentioned in RECORD"),
])
def test_installer_rejects_a_wheel_whose_record_does_not_match(
        finalized: Path, sabotage: Callable[[dict[str, bytes]], None], issue: str) -> None:
    bad = _rewrite(finalized, sabotage)
    with WheelFile.open(bad) as source, pytest.raises(ValueError, match=issue):
        source.validate_record(validate_contents=True)

