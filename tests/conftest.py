"""The tier of a test is its folder, and the shared fixtures: a scratch copy of build_config/ to break on purpose,
the real cache, and the wheels of the shipped targets, built once per session.

    unit/                     offline, no build, no emulator: the fast tier
    integration/builds/        builds real wheels from the pinned sdists            (build, network)
    integration/emulated/     runs aarch64 code under the pinned qemu-user          (emulated, network)
    integration/network/      downloads (sdists, Debian packages), builds nothing   (network)
    extended/                 a release no pin has, compiled from nothing           (extended)
    bench/                    the benchmark-only x86_64 wheels, natively             (bench)

A test module anywhere else, or one that names a tier marker of its own, is a collection error: the folder
says where a test runs, nothing else does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llama_wheels.core.cache import Cache
from tests.support.checkout import REPO, build_target
from tests.support.tiers import TIER_MARKERS, TIERS

TESTS = Path(__file__).resolve().parent


def tier_of(path: Path) -> str:
    """The tier folder ``path`` (a test module) lies in; a usage error for a module outside every tier."""
    relative = path.resolve().relative_to(TESTS).as_posix()
    for folder in TIERS:
        if relative.startswith(folder + "/"):
            return folder
    raise pytest.UsageError(f"tests/{relative}: a test module outside the tier folders; move it into one of "
                            f"{', '.join('tests/' + f + '/' for f in TIERS)}")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        own = sorted({mark.name for mark in item.iter_markers()} & TIER_MARKERS)
        if own:
            raise pytest.UsageError(f"{item.nodeid}: marked {', '.join(own)} inside the file; the folder "
                                    f"({tier}/) sets the tier: move the test instead")
        for marker in TIERS[tier]:
            item.add_marker(marker)


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


@pytest.fixture(scope="session")
def default_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default target's wheel, built, repaired and smoke-tested by `llama-wheels build`."""
    return build_target(tmp_path_factory)


@pytest.fixture(scope="session")
def macos_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The macos-arm64 wheel (runtime dispatch over ggml's Apple variants), cross built with zig; nothing here
    can run it."""
    return build_target(tmp_path_factory, "macos-arm64", "--no-verify")

