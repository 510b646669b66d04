"""Real builds from the pinned sdist, through the CLI exactly as the README runs it.

The first build on a machine compiles everything (about 11 minutes on 2 cores); later ones reuse the
CMake build tree and ccache in the cache outside the clone.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import pytest

from llama_wheels.binaries.wheel import cpu_variants
from llama_wheels.config import load
from llama_wheels.config.cpus import load_cpus
from llama_wheels.config.platforms import platform
from llama_wheels.core.cache import Cache
from llama_wheels.judges.verify import SmokeVerifier, smoke_test
from llama_wheels.pipeline import prepare_job
from llama_wheels.pipeline.store import WheelStore
from llama_wheels.plan import plan
from llama_wheels.stages.fetch import cached_sdist
from llama_wheels.stages.patching import patch_files
from llama_wheels.stages.provenance import collect
from llama_wheels.stages.toolchain import zig_toolchain
from tests.support.checkout import REPO, cache_root_sharing, cli


@pytest.mark.parametrize(("cpu", "variant", "layout"), [("neoverse-n1", "armv8.2_2", "q4_0_4x4"),
                                                         ("cortex-a53", "armv8.0_1", "none")])
def test_default_wheel_runs_a_tiny_model_under_qemu(default_wheel: Path, cache: Cache, cpu: str,
                                                    variant: str, layout: str) -> None:
    result = smoke_test(default_wheel, load_cpus(REPO)[cpu], cache)
    assert len(result.tokens) == 8
    assert (result.variant, result.layout) == (variant, layout)
    assert len(result.repacked) == (15 if layout != "none" else 0)  # every MUL_MAT weight of the q4_0 model


def without_variants(wheel: Path, out: Path, pattern: str) -> Path:
    """``wheel`` rewritten without the CPU variant libraries whose names match ``pattern``."""
    dropped = []
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if re.search(pattern, item.filename):
                dropped.append(item.filename)
            else:
                dst.writestr(item, src.read(item))
    assert dropped, f"no library of {wheel.name} matches {pattern}"
    return out


def test_build_fails_a_default_wheel_that_lost_its_armv8_2_and_later_variants(
        default_wheel: Path, cache: Cache, tmp_path: Path) -> None:
    """Issue 12 item 2's sabotage: the default wheel without its armv8.2+/armv8.6/armv9 variants loads
    armv8.0_1 on neoverse-n1 and repacks nothing. `llama-wheels build` must fail it and publish nothing.

    The sabotaged wheel is put into a cache root of this test's own under the default job's key (the
    downloads, prepared source, toolchains and sysroot are the shared cache's), so the build finds it as
    its finished wheel and goes straight to verification."""
    root = cache_root_sharing(tmp_path / "cache", cache,
                              ("sdists", "src", "locks", "zig", "toolchains", "tools", "sysroot", "debs"))
    private = Cache(root)
    config = load(REPO)
    [job] = plan(config)
    source = prepare_job(job, config, private)
    toolchain = zig_toolchain(platform(job.platform), private)
    record = collect(job, source, toolchain, private, sdist=cached_sdist(job.pin, private),
                     patches=patch_files(job.pin, config.patches_dir))
    sabotaged = without_variants(default_wheel, tmp_path / default_wheel.name, r"/libggml-cpu-armv(8\.[26]|9)")
    with zipfile.ZipFile(sabotaged) as archive:
        assert cpu_variants(archive.namelist()) == ["armv8.0_1"]  # every variant but armv8.0_1 is gone
    WheelStore(private).put(record.key, sabotaged)

    dist, log = tmp_path / "dist", tmp_path / "build.log"
    result = cli("--log", str(log), "build", "--dist", str(dist), env={**os.environ, "LLAMA_WHEELS_CACHE": str(root)})
    assert "cache    hit" in result.stderr, f"the build did not take the sabotaged wheel (log {log})"
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"llama-wheels: error: {default_wheel.name} on neoverse-n1: loaded CPU variant armv8.0_1, expected "
        "armv8.2_2; Q4_0 repack none (0 tensors), expected q4_0_4x4 (15 tensors)")
    assert not dist.exists() or not list(dist.iterdir()), "a wheel that failed verification reached dist/"
    # The same judge passes the real wheel.
    summary = SmokeVerifier(load_cpus(REPO)["neoverse-n1"], cache).verify(default_wheel, source.tree)
    assert "CPU variant armv8.2_2, Q4_0 repack q4_0_4x4 in 15 tensors" in summary

