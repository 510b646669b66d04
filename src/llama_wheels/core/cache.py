"""Where things are kept outside the clone, and how they appear there atomically.

Everything expensive (sdists, prepared trees, CMake build trees, ccache, zig's cache, the emulated
sysroot) lives under one cache root, keyed by the hash of its inputs, so a fresh clone on the same
machine reuses it and a changed input never sees a stale result. Every output is written to a temp
path beside its final place and renamed into place: a crash or Ctrl-C leaves nothing that looks done.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from llama_wheels.core.runner import current_log


@dataclass(frozen=True)
class Cache:
    root: Path

    @classmethod
    def from_env(cls) -> Cache:
        explicit = os.environ.get("LLAMA_WHEELS_CACHE")
        if explicit:
            return cls(Path(explicit).expanduser().resolve())
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return cls(Path(base) / "llama-wheels")

    def dir(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def sdists(self) -> Path:
        return self.dir("sdists")

    @property
    def sources(self) -> Path:
        return self.dir("src")

    @property
    def builds(self) -> Path:
        return self.dir("build")

    @property
    def ccache(self) -> Path:
        return self.dir("ccache")

    @property
    def zig(self) -> Path:
        return self.dir("zig")

    @property
    def sysroots(self) -> Path:
        return self.dir("sysroot")


def hash_key(parts: Iterable[str | bytes], length: int = 16) -> str:
    """A short, stable content key for a sequence of inputs."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:length]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove(path: Path) -> bool:
    """Remove ``path`` (a file, a symlink or a whole tree); False if there was nothing. An OSError (a file
    that cannot be removed) is raised, never swallowed: nothing reports a removal that did not happen."""
    if path.is_dir() and not path.is_symlink():
        def failed(function: object, name: str, exc: BaseException) -> None:
            if isinstance(exc, OSError):  # with the full path (shutil names only the entry in its directory)
                raise OSError(exc.errno, exc.strerror, name) from None
            raise exc

        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=failed)
        else:
            shutil.rmtree(path, onerror=lambda function, name, info: failed(function, name, info[1]))
        return True
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _sweep_orphans(final: Path) -> None:
    """Remove what killed runs left of their staging of ``final``: its temps that no process holds a lock on
    (each run locks its temp while it lives; a SIGKILL or a power cut leaves it unlocked)."""
    prefix = f".{final.name}.tmp-"
    try:
        entries = [entry.path for entry in os.scandir(final.parent) if entry.name.startswith(prefix)]
    except FileNotFoundError:
        return
    for path in entries:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # gone meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with contextlib.suppress(OSError):
                remove(Path(path))
        except BlockingIOError:
            pass  # its run is alive
        finally:
            os.close(fd)


@contextlib.contextmanager
def _staged(final: Path, *, directory: bool) -> Iterator[Path]:
    """A temp path next to ``final`` (``.NAME.tmp-*``), locked for as long as the block runs, after sweeping
    away the temps of killed runs."""
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_orphans(final)
    tmp, held = _locked_temp(final, directory=directory)
    try:
        yield tmp
    finally:
        os.close(held)


def _locked_temp(final: Path, *, directory: bool) -> tuple[Path, int]:
    """A new temp beside ``final`` and a descriptor holding its lock. Between creating and locking it another
    run's sweep may take it for an orphan and remove it: then the lock is on a removed file, so make another."""
    prefix = f".{final.name}.tmp-"
    while True:
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, dir=final.parent)
            os.close(fd)
            tmp = Path(name)
        try:
            held = os.open(tmp, os.O_RDONLY)
        except FileNotFoundError:
            continue  # swept before we could open it
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            if os.stat(tmp).st_ino == os.fstat(held).st_ino:
                return tmp, held
        except FileNotFoundError:
            pass
        os.close(held)  # swept between creating and locking: the lock guards nothing


@contextlib.contextmanager
def atomic_path(final: Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temp path next to ``final``; rename it onto ``final`` only if the block succeeds. A temp that
    a killed run left beside ``final`` is removed by the next one.

    An operating-system error about the temp path (a full disk, a read-only directory, a directory where the
    file goes) is raised as one about ``final``: the path the user chose, not a hidden name they never saw."""
    tmp: Path | None = None
    try:
        with _staged(final, directory=directory) as tmp:
            yield tmp
            if directory and final.exists():
                remove(final)
            os.replace(tmp, final)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):  # the error that got us here is the one to report
                remove(tmp)
        raise_about_final(exc, tmp, final)
        raise


def raise_about_final(exc: BaseException, tmp: Path | None, final: Path) -> None:
    """If ``exc`` is an operating-system error about the temp path ``tmp`` (None: not made yet) that stands in
    for ``final``, or about no file at all (a write to a full disk names none), raise it as the same error about
    ``final``: the path the user chose, not a hidden one."""
    if isinstance(exc, OSError) and exc.errno is not None and (
            exc.filename is None or tmp is None or str(exc.filename).startswith(str(tmp))):
        raise OSError(exc.errno, exc.strerror, str(final)) from exc


def publish_file(src: Path, dest_dir: Path) -> Path:
    """Copy ``src`` into ``dest_dir`` atomically (a reader never sees a partial file)."""
    final = dest_dir / src.name
    with atomic_path(final) as tmp:
        shutil.copyfile(src, tmp)
        tmp.chmod(0o644)
    return final


def publish_files(sources: Sequence[Path], dest_dir: Path) -> list[Path]:
    """Copy every one of ``sources`` into ``dest_dir``, all or none.

    Every copy is made first, each to a temp file beside its final name (where a full disk or a
    read-only directory shows); only when all of them are complete are they renamed into place, one
    rename each. On any error the temp files are removed and ``dest_dir`` is as it was; the temps of a
    killed run are removed by the next one.
    """
    names = [src.name for src in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"two files of one name to publish into {dest_dir}: {sorted(names)}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    with contextlib.ExitStack() as temps:
        try:
            for src in sources:
                tmp = temps.enter_context(_staged(dest_dir / src.name, directory=False))
                staged.append((tmp, dest_dir / src.name))
                shutil.copyfile(src, tmp)
                tmp.chmod(0o644)
            for tmp, final in staged:
                os.replace(tmp, final)
        except BaseException:
            for tmp, _ in staged:
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
            raise
    return [final for _, final in staged]


@contextlib.contextmanager
def locked(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold a lock on ``path`` (created if needed): exclusive (one process at a time past this point) or
    shared (any number of readers, while no one holds it exclusively)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, mode | fcntl.LOCK_NB)
        except BlockingIOError:  # another run (a second checkout, a CI job on the same cache) holds it
            current_log().progress(f"waiting  for the lock {path}: another llama-wheels run holds it")
            started = time.monotonic()
            fcntl.flock(fh, mode)
            current_log().progress(f"waiting  for the lock {path}: got it after {time.monotonic() - started:.1f}s")
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
