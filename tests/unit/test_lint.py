"""The code stays as the project's linters want it: ruff (style, imports, bug patterns), mypy --strict and
import-linter (the layers of the package, no import cycles).

Both are pinned in pyproject.toml, so a new release of either cannot turn this red on its own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.checkout import REPO


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff() -> None:
    result = run("ruff", "check", "--no-cache", "src", "tests", "benchmarks", "wheel_tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = run("mypy")  # files and strictness: [tool.mypy] in pyproject.toml
    assert result.returncode == 0, result.stdout + result.stderr


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter's contracts ([tool.importlinter] in pyproject.toml) over the package under ``root``."""
    return subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; "
         "sys.exit(c())", "--no-cache", str(REPO / "pyproject.toml")],
        cwd=root, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(root / "src"), "COLUMNS": "400"})  # one line per contract


def test_the_layer_contract_holds() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 7 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    # a stage reaching up into the emulated test bed: the layers contract breaks
    ("stages/build.py", "from llama_wheels.emulation import qemu  # noqa", "cli > ci | release"),
    # the config reading the plan it feeds: a layer inversion (config < plan)
    ("config/__init__.py", "import llama_wheels.plan  # noqa", "cli > ci | release"),
    # each "never" (a forbidden contract; the first three, for hooks, the test bed and release, are imports the
    # layers allow: only the "never" catches them)
    ("ci/hooks.py", "from llama_wheels.stages import build  # noqa",
     "the CI hooks call the pipeline, never a stage"),
    ("emulation/qemu.py", "from llama_wheels.stages import fetch  # noqa",
     "the test bed and the judges never import a stage"),
    ("judges/matrix.py", "from llama_wheels.stages import provenance  # noqa",
     "the test bed and the judges never import a stage"),
    ("stages/build.py", "from llama_wheels import pipeline  # noqa",
     "stages never import the pipeline, the test bed or the judges"),
    ("plan.py", "from llama_wheels.stages import fetch  # noqa", "planning never imports a stage"),
    ("release/index.py", "from llama_wheels.emulation import qemu  # noqa",
     "release (index, inspection, publishing) never runs a wheel"),
])
def test_a_contract_fails_on_a_forbidden_import(tmp_path: Path, module: str, line: str, contract: str) -> None:
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp_path / "src" / "llama_wheels" / module
    path.write_text(path.read_text() + f"\n{line}\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    verdicts = [line for line in result.stdout.splitlines() if line.endswith((" KEPT", " BROKEN"))]
    assert len(verdicts) == 7 and next(v for v in verdicts if v.startswith(contract)).endswith(" BROKEN"), verdicts


_PRIVATE = re.compile(r"^\s*from (llama_wheels(?:\.\w+)*) import (.+)$", re.MULTILINE)


def private_imports(src: Path) -> list[str]:
    """Every ``from llama_wheels.x import _name`` under ``src``: a module reaching into another's privates."""
    found = []
    for path in sorted(src.rglob("*.py")):
        for match in _PRIVATE.finditer(path.read_text()):
            private = [n.strip() for n in match[2].strip("()").split(",") if n.strip().startswith("_")]
            if private:
                found.append(f"{path.relative_to(src)}: from {match[1]} import {', '.join(private)}")
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    """``_name`` is private to its module: another module that needs it needs a public name."""
    found = private_imports(REPO / "src")
    assert not found, "\n".join(found)


def test_a_private_import_is_found(tmp_path: Path) -> None:
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp_path / "src" / "llama_wheels" / "emulation" / "qemu.py"
    path.write_text(path.read_text() + "\nfrom llama_wheels.core.runner import _log, current_log  # noqa\n")
    assert private_imports(tmp_path / "src") == [
        "llama_wheels/emulation/qemu.py: from llama_wheels.core.runner import _log"]

