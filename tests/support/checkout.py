"""The checkout under test: its root and build_config/, its command line run as a user runs it, and builds of
its targets into fresh directories."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llama_wheels.config import Config, Pin, load
from llama_wheels.core.cache import Cache

REPO = Path(__file__).resolve().parents[2]
# PYTHONPATH for a child that imports the checkout's package and its benchmarks (`python -m benchmarks.run`)
CHECKOUT_PATH = os.pathsep.join((str(REPO / "src"), str(REPO)))


@functools.cache
def repo_config() -> Config:
    """This checkout's build_config/, loaded once. Tests take versions, commits and sdist names from it, never
    from literals: adding a pin or moving the default one needs no test edit."""
    return load(REPO)


def pinned(name: str | None = None) -> Pin:
    """A pin of build_config/pins.toml (default: the default pin)."""
    return repo_config().pin(name)


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


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("llama-wheels: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def processes_mentioning(text: str) -> list[str]:
    """Command lines of the running processes that mention ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # ended meanwhile
        if text in argv:
            found.append(argv)
    return found


def config_copy(tmp_path: Path, name: str, edit: tuple[str, str] | None = None) -> Path:
    """A project root in tmp_path holding build_config/NAME, optionally with one text replacement."""
    text = (REPO / "build_config" / name).read_text()
    if edit is not None:
        assert edit[0] in text, edit
        text = text.replace(edit[0], edit[1], 1)
    (tmp_path / "build_config").mkdir(exist_ok=True)
    (tmp_path / "build_config" / name).write_text(text)
    return tmp_path
