"""The emulated musl test bed (build_config/musl_bed.toml, emulation/musl_bed.py) and which bed runs a wheel.

The ``emulated`` tests build the bed once (cached outside the clone: CPython cross built with zig from Debian's
sources) and run its python under qemu; the sabotage tests break a pin or a manifest and watch the bed refuse.
"""

from __future__ import annotations

import os
from pathlib import Path

from llama_wheels.core.cache import Cache
from tests.support.checkout import cache_root_sharing, cli

DSC = "python3.11_3.11.2-6+deb12u8.dsc"


def test_a_source_with_a_wrong_sha256_is_refused_before_building(config_root: Path, tmp_path: Path,
                                                                 cache: Cache) -> None:
    path = config_root / "build_config" / "musl_bed.toml"
    text = path.read_text()
    pin = "197fa19ab45f41c820f40f6d9ead671c2ea29ddc53ba9424b36f1bf58458a10e"
    assert pin in text
    path.write_text(text.replace(pin, "0" * 64))
    fresh = Cache(cache_root_sharing(tmp_path / "cache", cache, ("tools", "apt")))
    result = cli("--config", str(config_root), "--log", str(tmp_path / "log"), "bed", "musl",
                 env={**os.environ, "LLAMA_WHEELS_CACHE": str(fresh.root)}, timeout=600)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()[-1:]
    assert f'sources.python3.11.files."{DSC}": apt\'s index gives sha256 {pin}, not the pinned {"0" * 64}' in line
    assert len([x for x in result.stderr.splitlines() if "error" in x]) == 1
    assert not list(fresh.sysroots.glob("musl-*"))  # nothing built, nothing half-built
    assert not (fresh.root / "debsrc").exists() or not any((fresh.root / "debsrc").iterdir())

