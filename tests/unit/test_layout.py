"""The test suite's own layout: a test's tier is its folder (tests/conftest.py), and no test module imports
another (what tests share lives in tests/support/). Each rule is also broken on purpose in a scratch copy."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.checkout import REPO
from tests.support.tiers import TIERS


def modules_of(tests: Path) -> list[Path]:
    return sorted(p for p in tests.rglob("test_*.py") if "support" not in p.relative_to(tests).parts)


def imports_of_test_modules(tests: Path) -> list[str]:
    """Every import of a test module by another module under ``tests``: ``module: imported``."""
    found = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            if isinstance(node, ast.ImportFrom):
                names += [f"{node.module}.{alias.name}" if node.module else alias.name for alias in node.names]
            found += [f"{path.relative_to(tests).as_posix()}: {name}" for name in names
                      if any(part.startswith("test_") or part == "conftest" for part in name.split("."))]
    return sorted(set(found))


def test_every_test_module_lies_in_a_tier_folder() -> None:
    tests = REPO / "tests"
    outside = [p.relative_to(tests).as_posix() for p in modules_of(tests)
               if not any(p.relative_to(tests).as_posix().startswith(folder + "/") for folder in TIERS)]
    assert modules_of(tests) and not outside, outside


def test_no_test_module_imports_another() -> None:
    assert imports_of_test_modules(REPO / "tests") == []


def test_an_import_of_another_test_module_is_found(tmp_path: Path) -> None:
    shutil.copytree(REPO / "tests", tmp_path / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "tests" / "unit" / "test_thief.py").write_text("from tests.unit.test_oracle import cpus  # noqa\n")
    assert imports_of_test_modules(tmp_path / "tests") == ["unit/test_thief.py: tests.unit.test_oracle",
                                                           "unit/test_thief.py: tests.unit.test_oracle.cpus"]


def collect(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest --collect-only in a scratch checkout ``root`` (its tests/ and pyproject.toml; this src/)."""
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A checkout with this one's pyproject.toml, conftest and support package, and no test module yet."""
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(REPO / "tests", tmp_path / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", "test_*.py"))
    return tmp_path


TRIVIAL = "def test_nothing_much() -> None:\n    assert 1 + 1 == 2\n"


def test_the_folder_sets_the_markers(scratch: Path) -> None:
    (scratch / "tests" / "integration" / "emulated" / "test_probe.py").write_text(TRIVIAL)
    (scratch / "tests" / "unit" / "test_probe.py").write_text(TRIVIAL)
    emulated = collect(scratch, "-m", "emulated and network")
    assert "1/2 tests collected" in emulated.stdout, emulated.stdout + emulated.stderr
    assert "tests/integration/emulated/test_probe.py::test_nothing_much" in emulated.stdout
    fast = collect(scratch)  # pyproject.toml's default selection: the fast tier
    assert "1/2 tests collected" in fast.stdout and "tests/unit/test_probe.py::" in fast.stdout, fast.stdout


def test_a_test_module_outside_the_tier_folders_is_refused(scratch: Path) -> None:
    (scratch / "tests" / "test_flat.py").write_text(TRIVIAL)
    result = collect(scratch)
    assert result.returncode != 0
    assert "tests/test_flat.py: a test module outside the tier folders" in result.stdout + result.stderr


def test_a_tier_marker_inside_a_test_module_is_refused(scratch: Path) -> None:
    (scratch / "tests" / "unit" / "test_marked.py").write_text("import pytest\n\n\n@pytest.mark.emulated\n" + TRIVIAL)
    result = collect(scratch)
    assert result.returncode != 0
    assert "marked emulated inside the file; the folder (unit/) sets the tier" in result.stdout + result.stderr
