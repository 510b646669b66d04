"""benchmarks/: the statistics and variant forcing (fast), and the smoke run that keeps run.py working.

The smoke run builds (or reuses) the x86_64 dispatch and exact-ISA wheels through the pipeline, so it is a
`build` test; with warm caches it takes about a minute. It checks the shape of what run.py writes and that
each run measured what it claims (repacking on/off, the forced variant), never a speed: CI machines vary.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.checkout import CHECKOUT_PATH


@pytest.mark.skipif(
    platform.machine() != "x86_64", reason="the smoke run benchmarks the native x86_64 wheels"
)
def test_smoke_run_writes_json_and_png(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": CHECKOUT_PATH}
    result = subprocess.run(
        [
            sys.executable,
            "-m", "benchmarks.run",
            "--smoke",
            # Any AVX2 machine runs the haswell wheel: CI does not depend on which variant its CPU gets
            # (the automatic choice of the exact-ISA target is tested above, without building).
            "--exact-target",
            "linux-x86_64-haswell",
            "--out",
            str(out),
            "--log",
            str(tmp_path / "bench.log"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert result.returncode == 0, (
        f"run.py --smoke failed (log {tmp_path / 'bench.log'}):\n{result.stderr[-3000:]}"
    )
    data = json.loads((out / "benchmarks.json").read_text())
    assert data["smoke"] is True and len(data["commit"]) == 40
    assert data["machine"]["cores"] and data["machine"]["cpu_model"]
    assert data["targets"]["dispatch"] == "linux-x86_64"
    assert data["targets"]["exact"] == "linux-x86_64-haswell" and data["targets"]["exact_variant"] == "haswell"
    on, off = data["repack"]["on"], data["repack"]["off"]
    assert on["repacked"] > 0 and off["repacked"] == 0
    assert on["variant"] == data["variants"]["auto"]
    assert data["dispatch"]["exact"]["variant"] is None and data["dispatch"]["exact"]["repacked"] > 0
    runs = data["variants"]["runs"]
    assert data["variants"]["auto"] in runs
    assert all(run["variant"] == name for name, run in runs.items())
    assert set(runs) == {v for v, score in data["variants"]["scores"].items() if score > 0}
    for run in [on, off, *runs.values()]:
        assert run["pp_tokens_per_s"]["median"] > 0 and run["tg_tokens_per_s"]["median"] > 0
    assert data["builds"] is None
    assert (out / "benchmarks.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "paired on/off, 95% CI" in result.stdout
    for ratio in (data["repack"]["ratio"]["pp"], data["dispatch"]["ratio"]["tg"]):
        assert ratio["pairs"] == 3 and ratio["ci95"][0] <= ratio["ratio"] <= ratio["ci95"][1]


@pytest.mark.skipif(platform.machine() != "x86_64", reason="benchmarks/threads.py measures a native x86_64 wheel")
def test_threads_smoke_checks_the_patched_defaults(tmp_path: Path) -> None:
    """benchmarks/threads.py on the haswell wheel built with patch 0008: its default_n_threads() keeps x86_64's
    old default natively and when forced, and gives the affinity mask for aarch64 (the script refuses otherwise);
    each thread count measured."""
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.threads", "--smoke", "--out", str(out),
         "--log", str(tmp_path / "threads.log")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": CHECKOUT_PATH}, capture_output=True, text=True,
        timeout=3600,
    )
    log = tmp_path / "threads.log"
    assert result.returncode == 0, f"threads.py --smoke failed (log {log}):\n{result.stderr[-3000:]}"
    data = json.loads((out / "threads.json").read_text())
    assert data["wheel_has_patch_0008"] is True
    cpus = os.cpu_count() or 1
    assert data["defaults"] == {"old": [max(cpus // 2, 1), cpus], "aarch64": [len(os.sched_getaffinity(0))] * 2}
    assert all(s["median"] > 0 for s in data["ms_per_token"].values())
    assert "patched / old default, generation speed" in result.stdout
    assert data["patched_over_old"]["pairs"] == 3

