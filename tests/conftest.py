"""Shared fixtures: a scratch copy of build_config/ to break on purpose, and the real cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llama_wheels.cache import Cache

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def config_root(tmp_path: Path) -> Path:
    """A copy of the checkout's build_config/ and patches/ that a test may edit."""
    root = tmp_path / "checkout"
    shutil.copytree(REPO / "build_config", root / "build_config")
    shutil.copytree(REPO / "patches", root / "patches")
    return root


@pytest.fixture(scope="session")
def cache() -> Cache:
    """The real cache outside the clone (downloads and builds are reused across runs)."""
    return Cache.from_env()
