"""The README's "Add a llama-cpp-python version" checklist, run as written in a scratch clone with the newest
release no pin has standing in for its example version: pin add, pin check, build (compiled from nothing),
test on every emulated CPU class, publish = true, ci generate, commit."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from llama_wheels.config import load
from tests.support.checklists import checklist, run, scratch_clone
from tests.support.pins import newest_unpinned_release

EXAMPLE = "0.3.37"  # the README's stand-in for the release taken in


def publish(clone: Path, version: str) -> None:
    """The step that says to add `publish = true` to the new pin's table, done as an engineer does it."""
    pins = clone / "build_config" / "pins.toml"
    header = f'[pins."{version}"]\n'
    text = pins.read_text()
    assert header in text
    pins.write_text(text.replace(header, header + "publish = true\n", 1))


def test_the_add_a_version_checklist_runs(tmp_path: Path) -> None:
    version = newest_unpinned_release()["version"]
    clone = scratch_clone(tmp_path / "clone")
    for step in checklist("Add a llama-cpp-python version"):
        for command in step.commands:
            result = run(command.replace(EXAMPLE, version), clone)
            assert result.returncode == 0, (f"step {step.number}: {command}\n"
                                            f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
        if "`publish = true`" in step.text:
            publish(clone, version)
    pin = load(clone).pin(version)
    assert pin.publish and pin.version == version
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True,
                            check=True).stdout
    assert [line for line in status.splitlines() if not re.match(r"\?\? (dist|reports)/", line)] == []
    last = subprocess.run(["git", "show", "--stat", "--format=%s", "HEAD"], cwd=clone, capture_output=True,
                          text=True, check=True).stdout
    assert f"Pin llama-cpp-python {version}" in last and f"patches/{version}/" in last
    assert "build_config/pins.toml" in last and ".github/workflows/wheels.yml" in last
