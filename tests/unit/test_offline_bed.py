"""The test bed's first download with no way to the Debian archive (offline, a dead mirror or proxy) names the
network, not the pin of build_config/qemu.toml: the pin is right, the archive cannot be reached."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_wheels.config.qemu_spec import load_qemu_spec
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import LlamaWheelsError, UserError
from llama_wheels.emulation.qemu import ensure_qemu

DEAD_MIRROR = "http://127.0.0.1:9/debian"  # the discard port: nothing listens, the connection is refused


def test_an_unreachable_archive_is_named_not_the_pin(config_root: Path, tmp_path: Path) -> None:
    qemu_toml = config_root / "build_config" / "qemu.toml"
    qemu_toml.write_text(qemu_toml.read_text().replace('mirror = "http://deb.debian.org/debian"',
                                                       f'mirror = "{DEAD_MIRROR}"'))
    with pytest.raises(LlamaWheelsError) as raised:
        ensure_qemu(Cache(tmp_path / "empty-cache"), load_qemu_spec(config_root))
    message = str(raised.value)
    assert not isinstance(raised.value, UserError), message  # a failing environment (exit 1), not bad input
    assert "127.0.0.1:9" in message and "network" in message, message
    assert "move the pin" not in message, message
