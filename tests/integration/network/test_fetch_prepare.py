"""fetch and prepare: checksums, atomic downloads, patch series all-or-nothing, source facts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from llama_wheels.config import load
from llama_wheels.core.cache import Cache
from llama_wheels.stages.fetch import fetch_sdist
from llama_wheels.stages.patching import PreparedSource, prepare
from tests.support.checkout import REPO, pinned, repo_config


@pytest.mark.parametrize("pin_name", sorted(repo_config().pins))
def test_real_pins_fetch_prepare_and_declare_their_options(pin_name: str, cache: Cache) -> None:
    """The committed pins: sdist hash, vendored commit and patch series match the real PyPI release."""
    config = load(REPO)
    pin = config.pin(pin_name)
    source = prepare(pin, fetch_sdist(pin, cache), config.patches_dir, cache)
    assert [p.name for p in source.patches] == list(pin.patches)
    for switch, mapping in pin.switches.items():
        if isinstance(mapping, str) and not mapping.startswith("-"):
            assert mapping in source.cmake_options, f"{pin_name}: {switch} -> {mapping} is not declared"
    # A switch this pin maps otherwise than the default pin does (0.3.4: GGML_CPU_AARCH64 for
    # GGML_CPU_REPACK, -march for GGML_CPU_ARM_ARCH): the default pin's name is one this revision lacks.
    for switch, theirs in pinned().switches.items():
        mapping = pin.switches.get(switch)
        if isinstance(theirs, str) and not theirs.startswith("-") and isinstance(mapping, str) and mapping != theirs:
            assert theirs not in source.cmake_options, f"{pin_name}: {switch} could be {theirs} here"


def test_edited_patch_prepares_a_new_tree(tmp_path: Path, cache: Cache) -> None:
    config = load(REPO)
    pin = config.pin("current")
    sdist = fetch_sdist(pin, cache)
    first = prepare(pin, sdist, config.patches_dir, Cache(tmp_path / "c"))
    patches = tmp_path / "patches"
    (patches / pin.version).mkdir(parents=True)
    for name in pin.patches:
        text = (config.patches_dir / pin.version / name).read_text()
        (patches / pin.version / name).write_text(text.replace("Subject:", "X-Note: edited\nSubject:", 1))
    second = prepare(dataclasses.replace(pin), sdist, patches, Cache(tmp_path / "c"))
    # Same path (the CMake build tree and ccache keep working), new content and key.
    assert first.tree == second.tree and first.key != second.key
    assert PreparedSource.load(second.tree).patches == second.patches
    assert prepare(pin, sdist, config.patches_dir, Cache(tmp_path / "c")).key == first.key

