"""The finished-wheel cache: ``<cache>/wheels/<key>/``, key = sha256 of the wheel's provenance record.

The record lists every input of a build (sdist and patch hashes, the exact CMake settings, the target,
toolchain identity and tool versions, llama-wheels' stage code, SOURCE_DATE_EPOCH), so an entry under
the same key is the wheel a rebuild would produce and is reused as is; any changed input is another key
and builds. An entry is a directory made atomically (wheel + ``entry.json`` with the wheel's sha256);
a wheel that no longer has that sha256 is dropped and rebuilt, never served. ``entry.json`` also records
the emulated CPUs a wheel was smoke-tested on, so a cache hit skips a verification already done.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from llama_wheels.core.cache import Cache, atomic_path, locked, remove, sha256_file

ENTRY = "entry.json"


@dataclass(frozen=True, kw_only=True)
class Entry:
    directory: Path
    wheel: Path
    sha256: str
    verified_on: tuple[str, ...]


class WheelStore:
    """The entries, each read and written under its own lock (``<cache>/wheels/.locks/<key>``): two runs
    (checkouts, CI jobs sharing a cache) never see an entry half replaced, and a verification is never
    lost to a concurrent read-modify-write."""

    def __init__(self, cache: Cache) -> None:
        self.root = cache.root / "wheels"

    def _dir(self, key: str) -> Path:
        return self.root / key[:32]

    def _lock(self, key: str) -> Path:
        return self.root / ".locks" / key[:32]

    def lookup(self, key: str) -> Entry | None:
        """The cached wheel for ``key``, re-hashed; None (and a corrupt entry removed) otherwise.

        Only a corrupt or stale entry is dropped; an OSError reading it (permissions, I/O) is raised, not
        turned into a rebuild on every run.
        """
        with locked(self._lock(key)):
            return self._read(key)

    def _read(self, key: str) -> Entry | None:
        directory = self._dir(key)
        try:
            meta = json.loads((directory / ENTRY).read_text())
        except FileNotFoundError:
            return None
        except ValueError:  # not JSON (a torn write of an older version): corrupt
            meta = None
        try:
            if not isinstance(meta, dict) or meta.get("key") != key or not isinstance(meta.get("wheel"), str):
                raise ValueError("corrupt")
            wheel = directory / meta["wheel"]
            if sha256_file(wheel) != meta["sha256"]:
                raise ValueError("stale")
        except (ValueError, KeyError, FileNotFoundError):
            remove(directory)
            return None
        return Entry(directory=directory, wheel=wheel, sha256=meta["sha256"],
                     verified_on=tuple(meta.get("verified_on", ())))

    def put(self, key: str, wheel: Path) -> Entry:
        """Store ``wheel`` under ``key`` atomically (replacing any entry) and return the entry."""
        directory = self._dir(key)
        with locked(self._lock(key)):
            with atomic_path(directory, directory=True) as tmp:
                shutil.copyfile(wheel, tmp / wheel.name)
                (tmp / wheel.name).chmod(0o644)
                meta = {"key": key, "wheel": wheel.name, "sha256": sha256_file(tmp / wheel.name),
                        "verified_on": []}
                (tmp / ENTRY).write_text(json.dumps(meta, indent=2) + "\n")
            entry = self._read(key)
        if entry is None:
            raise OSError(f"{directory}: the entry just stored cannot be read back")
        return entry

    def mark_verified(self, key: str, entry: Entry, cpu: str) -> Entry:
        """Record that ``entry``'s wheel passed the smoke test on ``cpu``."""
        with locked(self._lock(key)):
            meta = json.loads((entry.directory / ENTRY).read_text())
            meta["verified_on"] = sorted({*meta.get("verified_on", ()), cpu})
            with atomic_path(entry.directory / ENTRY) as tmp:
                tmp.write_text(json.dumps(meta, indent=2) + "\n")
        return Entry(directory=entry.directory, wheel=entry.wheel, sha256=entry.sha256,
                     verified_on=tuple(meta["verified_on"]))
