"""The benchmark-only x86_64 targets: built by the pipeline, installed natively with pip, and proven by the
same wheel suite (wheel_tests/) that cibuildwheel and the emulated matrix run, here on the build machine's
own CPU. Only on an x86_64 machine with AVX2 (the Q4_0 -> q4_0_8x8 repack that the suite then expects).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import perf, wheels
from llama_wheels.config import load
from llama_wheels.config.platforms import platform as platform_named
from llama_wheels.judges.matrix import module_file
from llama_wheels.stages.repair import check_wheel
from tests.support.checkout import REPO, build_target


@pytest.fixture(scope="module")
def dispatch_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheel = build_target(tmp_path_factory, "linux-x86_64")
    check_wheel(wheel, platform_named("linux-x86_64"))
    scratch = tmp_path_factory.mktemp("x86_64")
    return wheels.install(wheel, scratch / "site", load(REPO), scratch)


def test_dispatch_wheel_ships_every_x86_variant_and_picks_one(dispatch_site: Path) -> None:
    assert wheels.variants(dispatch_site) == sorted(
        ["x64", "sse42", "sandybridge", "ivybridge", "piledriver", "haswell", "skylakex", "cannonlake",
         "cascadelake", "icelake", "cooperlake", "zen4", "alderlake", "sapphirerapids"])
    info = perf.diagnostics(dispatch_site)
    scores = info["variant_scores"]
    assert info["variant"] == max(scores, key=scores.get)
    assert scores["x64"] > 0 and scores["haswell"] > 0
    assert info["q4_0_repack_layout"] == "q4_0_8x8"


def test_wheel_suite_passes_natively(dispatch_site: Path, tmp_path: Path) -> None:
    # The oracle has no x86 variant rules: the variant is the one ggml's own scores pick (diagnostics).
    env = {**os.environ, "PYTHONPATH": str(dispatch_site), "LLAMA_WHEELS_EXPECT_LAYOUT": "q4_0_8x8",
           "LLAMA_WHEELS_EXPECT_VARIANT": str(perf.diagnostics(dispatch_site)["variant"]),
           "LLAMA_WHEELS_MODELS_PY": str(module_file("llama_wheels.standalone.models"))}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", str(REPO / "wheel_tests")], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]

