"""The emulated ARM test bed: cpus.toml and sysroot.toml parsing, the sysroot, and qemu-user itself.

The ``emulated`` tests build (once, cached outside the clone) and use the real sysroot; the feature test
is what keeps the data in build_config/cpus.toml honest.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from llama_wheels.config.qemu_spec import load_qemu_spec
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import ChecksumError, ConfigError, UserError
from llama_wheels.emulation import qemu
from tests.support.checkout import REPO, config_copy


def test_the_pinned_qemu_is_fetched_once_and_is_static_10_0(cache: Cache) -> None:
    spec = load_qemu_spec(REPO)
    binary = qemu.ensure_qemu(cache)
    assert binary.parent == cache.root / "tools" / f"qemu-user-{spec.sha256[:16]}"
    record = json.loads((binary.parent / "deb.json").read_text())
    assert (record["version"], record["sha256"], record["arch"]) == (spec.version, spec.sha256, "amd64")
    qemu.check_static_binary(binary, "EM_X86_64", spec)  # what it was let in by, still true
    started = time.monotonic()
    assert qemu.ensure_qemu(cache) == binary
    assert time.monotonic() - started < 1.0  # a cache hit: no apt, no network
    older = replace(spec, version="1:10.0.12+ds-0+deb13u1")
    with pytest.raises(UserError, match=r"does not run here or is another version: qemu-aarch64 version 10\.0\.13"):
        qemu.check_static_binary(binary, "EM_X86_64", older)


def test_a_wrong_sha256_pin_is_refused_and_nothing_is_cached(tmp_path: Path) -> None:
    """Sabotage: a copied qemu.toml with another sha256. apt's index contradicts the pin, so nothing is
    downloaded, unpacked or cached; the error is one line naming the file, both hashes and the fix."""
    real = load_qemu_spec(REPO).sha256
    spec = load_qemu_spec(config_copy(tmp_path, "qemu.toml", (real, "0" * 64)))
    fresh = Cache(tmp_path / "cache")
    with pytest.raises(ChecksumError) as refused:
        qemu.ensure_qemu(fresh, spec)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{spec.source}: [package]: apt's index gives qemu-user_1%3a10.0.")
    assert f"sha256 {real}, not the pinned {'0' * 64}" in message
    assert "see the header of qemu.toml" in message
    left = sorted(p.name for p in (fresh.root / "tools").iterdir())
    assert left == [f".qemu-user-{'0' * 16}.lock"], left  # no binary, no scratch dir
    assert not list(fresh.root.rglob("*.deb"))


def test_a_version_trixie_no_longer_has_is_refused_naming_the_pin(tmp_path: Path) -> None:
    """What happens after a trixie point release replaces the pinned version: one line, nothing cached."""
    spec = load_qemu_spec(config_copy(tmp_path, "qemu.toml", ('version = "1:10.0.', 'version = "1:9.9.')))
    fresh = Cache(tmp_path / "cache")
    with pytest.raises(ConfigError, match=r"qemu\.toml: \[package\]: apt-get cannot download them: E: Version "
                                          r"'1:9\.9\.\S+' for 'qemu-user' was not found; to move the pin, see the "
                                          r"header of qemu\.toml$"):
        qemu.ensure_qemu(fresh, spec)
    assert not [p for p in (fresh.root / "tools").iterdir() if not p.name.endswith(".lock")]

