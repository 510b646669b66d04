"""Locked tools: requirements/*.txt are generated from pyproject.toml (``llama-wheels lock``), every
entry carries its sha256, and every install of CI, the cibuildwheel hook and bootstrap.sh goes through
them with ``--require-hashes``. The drift check is offline: the inputs' digest and the coverage of every
pyproject.toml requirement by a version its specifier allows.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest

from llama_wheels.ci import lock, workflows
from tests.support.checkout import REPO, cli


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    root.mkdir()
    shutil.copy(REPO / "pyproject.toml", root)
    shutil.copytree(REPO / "requirements", root / "requirements")
    shutil.copytree(REPO / "build_config", root / "build_config")
    return root


def test_the_committed_locks_match_pyproject() -> None:
    assert lock.check(REPO) == []
    result = cli("lock", "--check")
    assert result.returncode == 0, result.stderr


def test_the_resolver_is_the_pinned_one() -> None:
    test_extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    assert lock.UV in test_extra
    assert lock.uv_version() == lock.UV.split("==")[1]


def test_changing_a_pin_in_pyproject_fails_the_check(checkout: Path) -> None:
    pyproject = checkout / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"ninja==1.13.0"', '"ninja==1.11.1"'))
    problems = lock.check(checkout)
    assert "requirements/ci.txt: made from other inputs than pyproject.toml's requirements now" in problems
    assert "requirements/ci.txt: pins ninja==1.13.0, pyproject.toml wants ninja==1.11.1" in problems
    assert "requirements/test.txt: pins ninja==1.13.0, pyproject.toml wants ninja==1.11.1" in problems
    result = cli("--config", str(checkout), "lock", "--check")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "llama-wheels: error: requirements/ci.txt: made from other inputs than pyproject.toml's requirements "
        "now (and 5 more); run `llama-wheels lock` and commit requirements/")


def test_a_new_dependency_and_a_new_test_tool_fail_the_check(checkout: Path) -> None:
    pyproject = checkout / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('"pyelftools==0.33",', '"pyelftools==0.33", "tomli-w==1.2.0",'))
    assert "requirements/ci.txt: does not pin tomli-w (pyproject.toml: tomli-w==1.2.0)" in lock.check(checkout)
    pyproject.write_text(text.replace('"installer==1.1.0",', '"installer==1.1.0", "pytest-randomly",'))
    problems = lock.check(checkout)
    assert "requirements/test.txt: does not pin pytest-randomly (pyproject.toml: pytest-randomly)" in problems
    assert not [p for p in problems if p.startswith("requirements/ci.txt")]  # the test extra is not CI's


def test_an_entry_without_its_hash_fails_the_check(checkout: Path) -> None:
    path = checkout / "requirements/ci.txt"
    text = path.read_text()
    path.write_text(re.sub(r"(ninja==1\.13\.0 \\\n)(    --hash=sha256:\w+( \\)?\n)+", r"ninja==1.13.0\n", text))
    assert lock.check(checkout) == ["requirements/ci.txt: ninja==1.13.0 has no --hash (pip --require-hashes "
                                    "would refuse it)"]


def test_every_install_goes_through_a_lock() -> None:
    """No `pip install` in a generated workflow, the cibuildwheel hook or bootstrap.sh resolves anything:
    each installs a lock by hash and binary-only (tests/integration/network/test_lock_binaries.py proves the
    wheels exist), or the project itself with --no-deps."""
    texts = {str(rel): (REPO / rel).read_text()
             for rel in (workflows.WORKFLOW, workflows.RELEASE, workflows.CIBW_CONFIG)}
    assert "test-requires" not in texts[str(workflows.CIBW_CONFIG)]  # cibuildwheel would resolve it
    for script in ("scripts/cibw-before-build.sh", "scripts/bootstrap.sh"):
        texts[script] = (REPO / script).read_text()
    locks = {str(item.path) for item in lock.LOCKS}
    for where, text in texts.items():
        installs = re.findall(r"pip install ([^\n&]*)", text)
        assert installs, where
        for args in installs:
            hashed = re.search(r"--require-hashes --only-binary :all: -r \S*?(requirements/[\w-]+\.txt)", args)
            assert (hashed and hashed[1] in locks) or "--no-deps" in args.split(), f"{where}: pip install {args}"

