"""The code stays as the project's linters want it: ruff (style, imports, bug patterns) and mypy --strict.

Both are pinned in pyproject.toml, so a new release of either cannot turn this red on its own.
"""

from __future__ import annotations

import subprocess
import sys

from .conftest import REPO


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff() -> None:
    result = run("ruff", "check", "--no-cache", "src", "tests", "benchmarks", "wheel_tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = run("mypy")  # files and strictness: [tool.mypy] in pyproject.toml
    assert result.returncode == 0, result.stdout + result.stderr
