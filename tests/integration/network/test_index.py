"""The static PEP 503/691 index: layout per variant family, validity, pip reading it, atomic replacement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_wheels.release import index as index_module
from llama_wheels.release.index import build_index
from tests.support.index import pip, two_families
from tests.support.wheelfactory import NAME


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    return two_families(tmp_path)



def test_the_printed_install_command_resolves_the_dependencies_from_pypi(dist: Path, tmp_path: Path) -> None:
    """What `index` tells users to run gets our wheel from our index and its dependencies from PyPI; the
    --index-url form it used to print cannot, since our index serves only llama-cpp-python."""
    build_index(dist, tmp_path / "site")
    url = (tmp_path / "site" / "cpu" / "simple").as_uri()
    target = ["--dry-run", "--ignore-installed", "--report", "-", "--quiet", "--platform", "manylinux2014_aarch64",
              "--python-version", "3.11", "--implementation", "cp", "--only-binary=:all:",
              "--target", str(tmp_path / "t")]
    hinted = index_module.install_command(url, ["llama-cpp-python"]).split()
    assert hinted[:2] == ["pip", "install"]
    ok = pip(*hinted[1:], *target)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = {item["metadata"]["name"]: item["download_info"]["url"] for item in json.loads(ok.stdout)["install"]}
    assert report["llama_cpp_python"] == f"{url}/llama-cpp-python/{NAME}"
    assert {"numpy", "jinja2", "diskcache"} <= {name.lower() for name in report}
    only_ours = pip("install", "llama-cpp-python", "--index-url", url, *target)
    assert only_ours.returncode != 0 and "No matching distribution found for typing-extensions" in only_ours.stderr

