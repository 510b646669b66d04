"""Stage ``finalize``: put the provenance record into the repaired wheel and normalize the archive.

auditwheel and scikit-build-core each write the zip their own way (entry order, timestamps of the
moment, permissions from the umask). This stage rewrites the repaired wheel so that its bytes depend
only on its content and the build's SOURCE_DATE_EPOCH:

- every file entry (no directory entries), sorted by name, the ``.dist-info`` files last and RECORD
  the very last (PEP 427's recommendation);
- each entry's timestamp = SOURCE_DATE_EPOCH (UTC), its mode 0644, or 0755 when the owner could
  execute it, Unix as the creating system, no extra fields, deflate at one fixed level;
- ``<dist-info>/llama_wheels.json`` added (replacing one from an earlier run), RECORD regenerated in
  archive order with each file's sha256 and size; signatures of the old RECORD are dropped;
- the PEP 427 build tag of the record's pin (``build = N`` in pins.toml), or none: in the file name
  (``...-0.3.36-2-py3-none-...whl``) and as ``Build:`` in the WHEEL file. Applied here, after repair, so
  local builds and CI's repair hook name a wheel the same way whatever auditwheel or delocate do with it.

The result is written atomically into ``dest_dir`` under the repaired wheel's name (with that build tag).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import zipfile
from pathlib import Path

from llama_wheels.binaries.record import FILENAME, Record
from llama_wheels.binaries.wheel import with_build_tag
from llama_wheels.core.cache import atomic_path
from llama_wheels.core.errors import RepairError
from llama_wheels.stages.provenance import zip_date_time

COMPRESSLEVEL = 6
_DROPPED = ("RECORD", "RECORD.jws", "RECORD.p7s", FILENAME)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _dist_info(names: list[str], wheel: Path) -> str:
    tops = sorted({n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")})
    if len(tops) != 1:
        raise RepairError(f"{wheel.name}: expected one .dist-info directory, found {tops or 'none'}")
    return tops[0]


def entry_order(names: list[str], dist_info: str) -> list[str]:
    """Package files sorted, then the dist-info files sorted, RECORD last."""
    record = f"{dist_info}/RECORD"
    rest = sorted((n for n in names if n != record), key=lambda n: (n.startswith(dist_info + "/"), n))
    return [*rest, record]


def write_wheel(path: Path, files: dict[str, tuple[bytes, bool]], dist_info: str, epoch: int) -> None:
    """Write ``files`` (name -> (content, executable)) as a normalized wheel with a fresh RECORD."""
    order = entry_order([*files, f"{dist_info}/RECORD"], dist_info)
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    for name in order[:-1]:
        data = files[name][0]
        writer.writerow([name, _record_hash(data), len(data)])
    writer.writerow([order[-1], "", ""])
    contents = {**files, order[-1]: (rows.getvalue().encode(), False)}
    stamp = zip_date_time(epoch)
    with zipfile.ZipFile(path, "w") as archive:
        for name in order:
            data, executable = contents[name]
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.create_system = 3  # Unix: the mode below is meaningful
            info.external_attr = (0o100000 | (0o755 if executable else 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data, compresslevel=COMPRESSLEVEL)


def set_build(wheel_metadata: bytes, build_tag: str | None) -> bytes:
    """The WHEEL file with its ``Build:`` header set to ``build_tag`` (removed for None), the rest unchanged."""
    text = wheel_metadata.decode()
    lines = [line for line in text.splitlines() if not line.startswith("Build:")]
    if build_tag is None and len(lines) == len(text.splitlines()):
        return wheel_metadata  # nothing to change: the bytes stay exactly as the build wrote them
    while lines and not lines[-1]:
        lines.pop()
    if build_tag:
        lines.append(f"Build: {build_tag}")
    return ("\n".join(lines) + "\n\n").encode()


def read_files(wheel: Path) -> tuple[dict[str, tuple[bytes, bool]], str]:
    """Every file of ``wheel`` (name -> (content, owner-executable)) and its dist-info directory."""
    files: dict[str, tuple[bytes, bool]] = {}
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            if info.filename in files:
                raise RepairError(f"{wheel.name}: {info.filename} is stored twice")
            files[info.filename] = (archive.read(info), bool((info.external_attr >> 16) & 0o100))
    return files, _dist_info(list(files), wheel)


def finalize_wheel(wheel: Path, provenance: Record, dest_dir: Path) -> Path:
    """Rewrite ``wheel`` into ``dest_dir`` with ``provenance`` inside, normalized; return the new path."""
    files, dist_info = read_files(wheel)
    for name in _DROPPED:
        files.pop(f"{dist_info}/{name}", None)
    files[f"{dist_info}/{FILENAME}"] = (provenance.to_json().encode(), False)
    wheel_file = f"{dist_info}/WHEEL"
    if wheel_file not in files:
        raise RepairError(f"{wheel.name}: has no {wheel_file}")
    files[wheel_file] = (set_build(files[wheel_file][0], provenance.pin.build_tag), files[wheel_file][1])
    final = dest_dir / with_build_tag(wheel.name, provenance.pin.build_tag)
    with atomic_path(final) as tmp:
        write_wheel(tmp, files, dist_info, provenance.build.source_date_epoch)
        tmp.chmod(0o644)
    return final
