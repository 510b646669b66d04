"""Byte-reproducible wheels, and the finished-wheel cache, with real builds of a cheap shipped target.

``linux-aarch64-armv8.2-dotprod`` at the legacy pin (0.3.4: fixed ISA, one CPU library, 45 compile steps
where 0.3.36's has 393: the second, cold build was 287 s of the full tier's cold budget at 0.3.36; the suite
builds this one anyway for the legacy and fault tests, so the first build here is compiled from the shared
ccache) is built from two copies of the
checkout, each with its own cache root: separate prepared source trees and CMake build trees at different
paths. The first may use the shared ccache; the second compiles cold (CCACHE_DISABLE=1), so a ccache hit
cannot hide a difference: every object of the second wheel was compiled in its own directory. Shared
between the two (to keep the test affordable) are only the sdist download and zig's cache, which holds
zig's own runtime libraries (libc++, libunwind, glibc stubs): part of the toolchain, not of the build.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from llama_wheels.core.cache import Cache
from tests.support.checkout import REPO, cache_root_sharing
from tests.support.wheelfactory import record_data

TARGET = "linux-aarch64-armv8.2-dotprod"
PIN = "legacy"


SHARED = ("sdists", "zig")


@dataclass(frozen=True)
class Checkout:
    root: Path
    cache: Path

    def build(self, dist: Path, log: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
        environ = {**os.environ, "LLAMA_WHEELS_CACHE": str(self.cache), "PYTHONPATH": str(self.root / "src"),
                   **env}
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "llama_wheels", "--log", str(log), "build", TARGET, "--pin", PIN, "--no-verify",
             "--dist", str(dist)],
            cwd=self.root, env=environ, capture_output=True, text=True, timeout=5400)
        assert result.returncode == 0, f"build failed (log {log}):\n{result.stderr[-3000:]}"
        return result, time.monotonic() - started


def checkout(where: Path, shared: Cache, *, ccache: bool) -> Checkout:
    """A copy of this checkout's sources and configuration, with its own cache root."""
    root = where / "clone"
    for part in ("src", "build_config", "patches"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    return Checkout(root, cache_root_sharing(where / "cache", shared, (*SHARED, *(("ccache",) if ccache else ()))))


def only_wheel(dist: Path) -> Path:
    [wheel] = dist.glob("*.whl")
    return wheel


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def differences(a: Path, b: Path) -> list[str]:
    """Which members (or zip metadata) differ: the evidence when the wheels are not identical."""
    with zipfile.ZipFile(a) as za, zipfile.ZipFile(b) as zb:
        ia, ib = {i.filename: i for i in za.infolist()}, {i.filename: i for i in zb.infolist()}
        out = [f"only in one: {n}" for n in sorted(set(ia) ^ set(ib))]
        for name in sorted(set(ia) & set(ib)):
            x, y = ia[name], ib[name]
            if za.read(name) != zb.read(name):
                out.append(f"content: {name}")
            elif (x.date_time, x.external_attr, x.compress_size) != (
                    y.date_time, y.external_attr, y.compress_size):
                out.append(f"zip metadata: {name}")
        if [i.filename for i in za.infolist()] != [i.filename for i in zb.infolist()]:
            out.append("entry order")
    return out


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, cache: Cache) -> dict[str, object]:
    base = tmp_path_factory.mktemp("repro")
    first = checkout(base / "a", cache, ccache=True)
    second = checkout(base / "b", cache, ccache=False)
    _, seconds_a = first.build(base / "dist-a", base / "a.log")
    result_b, seconds_b = second.build(base / "dist-b", base / "b.log", CCACHE_DISABLE="1")
    return {"base": base, "first": first, "second": second, "a": only_wheel(base / "dist-a"),
            "b": only_wheel(base / "dist-b"), "stderr_b": result_b.stderr, "seconds": (seconds_a, seconds_b)}


def test_two_directories_give_byte_identical_wheels(builds: dict[str, object]) -> None:
    a, b = builds["a"], builds["b"]
    assert isinstance(a, Path) and isinstance(b, Path)
    assert "cache    miss" in str(builds["stderr_b"]), "the second build must really build"
    assert a.name == b.name
    assert sha256(a) == sha256(b), f"not reproducible: {differences(a, b)}"
    record = record_data(a)
    assert record is not None and record["target"]["name"] == TARGET
    print(f"\nreproducible: {a.name} sha256 {sha256(a)} (builds took {builds['seconds']} s)")


def test_unchanged_inputs_are_a_cache_hit_in_seconds(builds: dict[str, object]) -> None:
    first, base, a = builds["first"], builds["base"], builds["a"]
    assert isinstance(first, Checkout) and isinstance(base, Path) and isinstance(a, Path)
    result, seconds = first.build(base / "dist-again", base / "again.log")
    assert "cache    hit" in result.stderr
    assert "cache hit" in result.stdout
    assert "build    " not in result.stderr, "a cache hit must not run the build stage"
    assert seconds < 10, f"no-op rebuild took {seconds:.1f} s"
    assert sha256(only_wheel(base / "dist-again")) == sha256(a)
    print(f"\nno-op rebuild (cache hit): {seconds:.1f} s")


def test_a_changed_input_rebuilds(builds: dict[str, object]) -> None:
    """SOURCE_DATE_EPOCH is an input (the build date in the record and every zip timestamp)."""
    first, base, a = builds["first"], builds["base"], builds["a"]
    assert isinstance(first, Checkout) and isinstance(base, Path) and isinstance(a, Path)
    result, seconds = first.build(base / "dist-changed", base / "changed.log", SOURCE_DATE_EPOCH="1767225600")
    assert "cache    miss" in result.stderr and "build    " in result.stderr
    changed = only_wheel(base / "dist-changed")
    record = record_data(changed)
    assert record is not None and record["build"]["date"] == "2026-01-01T00:00:00Z"
    assert sha256(changed) != sha256(a)
    with zipfile.ZipFile(changed) as archive:
        assert {i.date_time for i in archive.infolist()} == {(2026, 1, 1, 0, 0, 0)}
    print(f"\nchanged input (SOURCE_DATE_EPOCH): cache miss, rebuilt in {seconds:.1f} s")

