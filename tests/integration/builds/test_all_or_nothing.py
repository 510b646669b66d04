"""All or nothing: a multi-target build publishes every wheel or none; the finished-wheel store is locked
and never drops an entry it merely cannot read; operating-system errors (a read-only or full directory)
end as one line and an exit code, never a traceback; `clean` says what it really removed.

A read-only directory is a real one: a read-only bind mount in a mount namespace of its own when this
runs as root (root writes through file modes), else a directory without write permission.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from llama_wheels.core.cache import Cache
from tests.support.checkout import cache_root_sharing, cli


def test_a_multi_target_build_that_fails_late_publishes_nothing(tmp_path: Path, cache: Cache) -> None:
    """The first target builds and passes every stage; the second (Metal: needs Apple's SDK) cannot be built
    here. Before, the first wheel was already in dist/; now dist/ gets nothing.

    Its own cache root (no finished wheel to reuse; ccache shared), so the first target really builds: the
    build command gets the allowlisted environment only, CPATH (set here) not among it. The first target is
    the one tests/integration/emulated/test_matrix.py builds too, so the suite compiles it once (ccache).
    """
    dist = tmp_path / "dist"
    root = cache_root_sharing(tmp_path / "cache", cache, ("sdists", "zig", "ccache", "toolchains"))
    env = {**os.environ, "LLAMA_WHEELS_CACHE": str(root), "CPATH": "/nonexistent-poison"}
    result = cli("--log", str(tmp_path / "log"), "build", "--no-verify", "--dist", str(dist),
                 "linux-aarch64-armv8.2-dotprod", "macos-arm64-metal", env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    log = (tmp_path / "log").read_text()
    assert re.search(r"audit    llama_cpp_python-\S+\.whl done", log), "the first target did not finish"
    assert "macos-arm64-metal@current turns on metal" in result.stderr.strip().splitlines()[-1]
    assert not dist.exists() or not any(dist.iterdir()), f"published: {sorted(dist.iterdir())}"
    [build] = re.findall(r"^\$ \S+ -m build --wheel .*\n((?:  .*\n)+)", log, re.MULTILINE)
    assert build.startswith("  env: only the variables below (nothing inherited)\n")
    assert "CPATH" not in build and "  env CCACHE_BASEDIR=" in build

