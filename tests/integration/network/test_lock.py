"""Locked tools: requirements/*.txt are generated from pyproject.toml (``llama-wheels lock``), every
entry carries its sha256, and every install of CI, the cibuildwheel hook and bootstrap.sh goes through
them with ``--require-hashes``. The drift check is offline: the inputs' digest and the coverage of every
pyproject.toml requirement by a version its specifier allows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.checkout import REPO


def test_a_fresh_venv_installs_the_ci_lock_by_hash(tmp_path: Path) -> None:
    """What every CI step runs, in a new venv: the lock by hash, then the project, and it works."""
    subprocess.run([sys.executable, "-m", "venv", tmp_path / "venv"], check=True)
    python = str(tmp_path / "venv/bin/python")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    for args in (["--require-hashes", "-r", str(REPO / "requirements/ci.txt")],
                 ["--no-deps", "--no-build-isolation", str(REPO)]):
        done = subprocess.run([python, "-m", "pip", "install", "--isolated", "-q", *args], capture_output=True,
                              text=True, env=env, timeout=1200, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    plan = subprocess.run([str(tmp_path / "venv/bin/llama-wheels"), "--config", str(REPO), "plan"],
                          capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0 and "linux-aarch64  (pin current" in plan.stdout, plan.stderr

