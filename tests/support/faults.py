"""Faults a test provokes on real builds: small file systems, a freeze at the moment a file appears, and the
checks that nothing a build left is half-written. Every helper fails (never skips) when it cannot provoke its
fault: a fault test that did not fault proves nothing."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import struct
import subprocess
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from llama_wheels.core.cache import sha256_file


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount's syntax: 1m, 2g) mounted at ``where`` for the block (needs root)."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True, text=True)
    assert mounted.returncode == 0, f"cannot mount a tmpfs (the fault cannot be provoked): {mounted.stderr}"
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=True)


def resize(mounted: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mounted)], check=True)


def store_entries_are_sound(cache_root: Path) -> list[str]:
    """The finished-wheel cache entries under ``cache_root``: each a wheel whose sha256 is the one its
    entry.json records, and a whole zip; no temp left beside them. Returns the entries' wheel names."""
    wheels = cache_root / "wheels"
    names = []
    for entry in sorted(wheels.iterdir()) if wheels.is_dir() else []:
        if entry.name == ".locks":
            continue
        assert ".tmp-" not in entry.name, f"a half-written cache entry was left: {entry}"
        meta = json.loads((entry / "entry.json").read_text())
        wheel = entry / meta["wheel"]
        assert sha256_file(wheel) == meta["sha256"], f"{wheel}: not the wheel its entry records"
        with zipfile.ZipFile(wheel) as archive:
            assert archive.testzip() is None, f"{wheel}: a damaged member"
        names.append(wheel.name)
    return names


def dist_is_sound(dist: Path) -> list[str]:
    """Every file in ``dist``: a whole wheel, nothing hidden or half-written. Returns their names."""
    names = sorted(p.name for p in dist.iterdir()) if dist.is_dir() else []
    for name in names:
        assert name.endswith(".whl") and not name.startswith("."), f"{dist}: {name} is not a finished wheel"
        with zipfile.ZipFile(dist / name) as archive:
            assert archive.testzip() is None, f"{dist / name}: a damaged member"
    return names


_IN_CREATE, _IN_MOVED_TO = 0x100, 0x80


class CreationWatch:
    """Calls ``react(name)`` the moment a file whose name passes ``wanted`` is created in ``directory``
    (inotify, from a thread of its own): a test freezes a writer there, between its temp and its rename."""

    def __init__(self, directory: Path, wanted: Callable[[str], bool], react: Callable[[str], None]) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = libc.inotify_init1(os.O_CLOEXEC)
        assert self._fd >= 0, f"inotify_init1: {os.strerror(ctypes.get_errno())}"
        directory.mkdir(parents=True, exist_ok=True)
        watch = libc.inotify_add_watch(self._fd, str(directory).encode(), _IN_CREATE | _IN_MOVED_TO)
        assert watch >= 0, f"inotify_add_watch {directory}: {os.strerror(ctypes.get_errno())}"
        self.seen: list[str] = []
        self._wanted, self._react = wanted, react
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = os.read(self._fd, 65536)
                offset = 0
                while offset < len(data):
                    _, mask, _, size = struct.unpack_from("iIII", data, offset)
                    name = data[offset + 16:offset + 16 + size].rstrip(b"\0").decode()
                    offset += 16 + size
                    if mask & (_IN_CREATE | _IN_MOVED_TO) and self._wanted(name):
                        self.seen.append(name)
                        self._react(name)
                        return

    def close(self) -> None:
        os.close(self._fd)
