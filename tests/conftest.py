"""Shared fixtures: a scratch copy of build_config/ to break on purpose, and the real cache."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llama_wheels.config import Config, Pin, load
from llama_wheels.core.cache import Cache

REPO = Path(__file__).resolve().parent.parent


@functools.cache
def repo_config() -> Config:
    """This checkout's build_config/, loaded once. Tests take versions, commits and sdist names from it, never
    from literals: adding a pin or moving the default one needs no test edit."""
    return load(REPO)


def pinned(name: str | None = None) -> Pin:
    """A pin of build_config/pins.toml (default: the default pin)."""
    return repo_config().pin(name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A build downloads its sdist and an emulated run the Debian sysroot: both are network cases."""
    for item in items:
        if item.get_closest_marker("build") or item.get_closest_marker("emulated"):
            item.add_marker(pytest.mark.network)


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


def cli(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
        timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    """Run the llama-wheels command line as a user would (this checkout's code, whatever is installed)."""
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "llama_wheels", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def cache_root_sharing(root: Path, shared: Cache, parts: tuple[str, ...]) -> Path:
    """A cache root of its own (its build trees and finished-wheel cache start empty) that shares only
    ``parts`` of the real cache (downloads, compiler caches) through symlinks, to keep a test affordable."""
    root.mkdir(parents=True)
    for part in parts:
        (root / part).symlink_to(shared.dir(part))
    return root


def build_target(tmp_path_factory: pytest.TempPathFactory, *args: str) -> Path:
    """Build one target through the CLI into a fresh dist/ (cached trees make repeats cheap)."""
    dist = tmp_path_factory.mktemp("dist")
    log = dist.parent / f"{dist.name}.log"
    result = cli("--log", str(log), "build", "--dist", str(dist), *args)
    assert result.returncode == 0, f"build {args} failed (log {log}):\n{result.stderr[-3000:]}"
    [wheel] = dist.glob("*.whl")
    return wheel


@pytest.fixture(scope="session")
def default_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default target's wheel, built, repaired and smoke-tested by `llama-wheels build`."""
    return build_target(tmp_path_factory)


@pytest.fixture(scope="session")
def macos_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The macos-arm64 wheel (runtime dispatch over ggml's Apple variants), cross built with zig; nothing here
    can run it."""
    return build_target(tmp_path_factory, "macos-arm64", "--no-verify")


@pytest.fixture(scope="session")
def musl_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The linux-aarch64-musl wheel (musllinux_1_2_aarch64), built by `llama-wheels build` (no emulated musl
    Python here yet: the static checks and the ISA audit judge it)."""
    return build_target(tmp_path_factory, "linux-aarch64-musl")
