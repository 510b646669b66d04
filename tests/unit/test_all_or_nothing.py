"""All or nothing: a multi-target build publishes every wheel or none; the finished-wheel store is locked
and never drops an entry it merely cannot read; operating-system errors (a read-only or full directory)
end as one line and an exit code, never a traceback; `clean` says what it really removed.

A read-only directory is a real one: a read-only bind mount in a mount namespace of its own when this
runs as root (root writes through file modes), else a directory without write permission.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from llama_wheels.core.cache import Cache, publish_files
from llama_wheels.pipeline.store import ENTRY, WheelStore
from tests.support.checkout import REPO, cli


def read_only(directory: Path, *cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` while ``directory`` is read-only for it."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO / "src")}
    if os.geteuid() == 0:
        d = shlex.quote(str(directory))
        script = f"mount --bind {d} {d} && mount -o remount,bind,ro {d} && exec {shlex.join(cmd)}"
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    else:
        directory.chmod(0o555)
        argv = list(cmd)
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    finally:
        directory.chmod(0o755)


def files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_publish_files_is_all_or_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    wheels = [src / f"w{i}.whl" for i in range(3)]
    for i, w in enumerate(wheels):
        w.write_bytes(f"wheel {i}".encode())
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "w0.whl").write_bytes(b"an earlier w0")
    wheels[2].unlink()  # the last one fails after the first two were copied
    with pytest.raises(FileNotFoundError):
        publish_files(wheels, dist)
    assert files(dist) == {"w0.whl": b"an earlier w0"}, "a partial set (or a temp file) reached dist/"
    wheels[2].write_bytes(b"wheel 2")
    published = publish_files(wheels, dist)
    assert [p.name for p in published] == ["w0.whl", "w1.whl", "w2.whl"]
    assert files(dist) == {f"w{i}.whl": f"wheel {i}".encode() for i in range(3)}


def test_publish_files_into_a_read_only_directory_publishes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        (src / f"w{i}.whl").write_bytes(b"x")
    dist = tmp_path / "dist"
    dist.mkdir()
    code = ("import sys; from pathlib import Path; from llama_wheels.core.cache import publish_files\n"
            "try:\n"
            f"    publish_files(sorted(Path({str(src)!r}).iterdir()), Path({str(dist)!r}))\n"
            "except OSError as exc:\n"
            "    print(type(exc).__name__, exc.errno); sys.exit(3)\n")
    result = read_only(dist, sys.executable, "-c", code)
    assert result.returncode == 3, result.stdout + result.stderr
    assert files(dist) == {}


def test_an_unreadable_store_entry_is_an_error_not_a_rebuild(tmp_path: Path) -> None:
    store = WheelStore(Cache(tmp_path))
    wheel = tmp_path / "w.whl"
    wheel.write_bytes(b"wheel")
    entry = store.put("cd" * 32, wheel)
    (entry.directory / ENTRY).unlink()
    (entry.directory / ENTRY).mkdir()  # an entry file that cannot be read (EISDIR)
    with pytest.raises(IsADirectoryError):
        store.lookup("cd" * 32)
    assert (entry.directory / entry.wheel.name).is_file(), "the entry was dropped"
    (entry.directory / ENTRY).rmdir()
    (entry.directory / ENTRY).write_text("{not json")  # corrupt: dropped, rebuilt
    assert store.lookup("cd" * 32) is None
    assert not entry.directory.exists()


def _hammer(root: str, key: str, rounds: int) -> None:
    store = WheelStore(Cache(Path(root)))
    wheel = Path(root) / f"w-{os.getpid()}" / "w.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"the same wheel")
    for _ in range(rounds):
        entry = store.put(key, wheel)
        store.mark_verified(key, entry, f"cpu-{os.getpid()}")
        if store.lookup(key) is None:
            raise AssertionError("an entry vanished between another run's remove and rename")


def test_concurrent_puts_of_one_key_never_expose_a_missing_entry(tmp_path: Path) -> None:
    key = "ef" * 32
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), key, 40)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    meta = json.loads((WheelStore(Cache(tmp_path))._dir(key) / ENTRY).read_text())
    assert meta["key"] == key


def test_a_read_only_output_directory_is_one_line_and_an_exit_code(tmp_path: Path) -> None:
    from tests.support.wheelfactory import built_wheel

    built_wheel(tmp_path / "dist")
    locked_dir = tmp_path / "public"
    locked_dir.mkdir()
    result = read_only(locked_dir, sys.executable, "-m", "llama_wheels", "--log", str(tmp_path / "log"),
                       "index", str(tmp_path / "dist"), str(locked_dir / "site"))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [ln for ln in result.stderr.splitlines() if "error" in ln]
    assert line.startswith(f"llama-wheels: error: {locked_dir}")
    assert ("(EROFS); choose a directory on a writable file system" in line
            or "(EACCES); make it writable" in line), line
    assert not any(locked_dir.iterdir())


def test_clean_reports_what_it_really_removed(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    (root / "build" / "t").mkdir(parents=True)
    (root / "build" / "t" / "obj.o").write_bytes(b"o")
    env = {**os.environ, "LLAMA_WHEELS_CACHE": str(root)}
    failed = read_only(root, sys.executable, "-m", "llama_wheels", "--log", str(tmp_path / "log1"), "clean",
                       env=env)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert f"removed {root / 'build'}" not in failed.stdout
    assert failed.stderr.strip().splitlines()[-1].startswith(f"llama-wheels: error: {root / 'build'}")
    assert (root / "build" / "t" / "obj.o").is_file()
    done = cli("--log", str(tmp_path / "log2"), "clean", env=env)
    assert done.returncode == 0, done.stderr
    assert f"removed {root / 'build'}" in done.stdout and f"absent  {root / 'src'}" in done.stdout
    assert not (root / "build").exists()

