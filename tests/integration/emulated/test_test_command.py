"""`llama-wheels test` judges a wheel by its record: it never fetches or prepares the pinned source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llama_wheels.core.cache import Cache
from tests.support.checkout import REPO, cache_root_sharing


def test_the_matrix_needs_no_source_tree(default_wheel: Path, cache: Cache, tmp_path: Path) -> None:
    """A cache that holds only the emulator (qemu and the emulated Python: ``tools``, ``sysroot``; and the
    shared test models), no network: the matrix runs the default wheel, and afterwards the cache has no sdist
    and no prepared source (what the CPU variants are comes from the wheel's record)."""
    fresh = cache_root_sharing(tmp_path / "cache", cache, ("tools", "sysroot", "models"))
    offline = ["unshare", "-n", "--"] if os.geteuid() == 0 else pytest.fail("needs root for unshare -n")
    env = {**os.environ, "LLAMA_WHEELS_CACHE": str(fresh), "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(
        [*offline, sys.executable, "-m", "llama_wheels", "--log", str(tmp_path / "test.log"), "test",
         str(default_wheel), "--cpu", "neoverse-n1", "--out", str(tmp_path / "report")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [cell] = json.loads((tmp_path / "report" / "matrix.json").read_text())["cells"]
    assert cell["verdict"] == "pass" and cell["variant"] == "armv8.2_2", cell
    made = sorted(p.name for p in fresh.iterdir())
    assert "sdists" not in made and "src" not in made, made
