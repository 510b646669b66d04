"""The official llama-cpp-python aarch64 wheel, rebuilt as a reference (targets.toml ``linux-aarch64-official``:
upstream's release workflow's CMake arguments, ``GGML_NATIVE=off`` and nothing else), the benchmarks' point of
comparison. Its own compile, so it lives in the bench tier.

Judged: CI and releases leave it out; the build audits it against the platform's armv8-a baseline (no
dotprod, i8mm or SVE instruction anywhere: what a build with no ARM architecture flag is); under qemu it loads
on the oldest class and on an i8mm+SVE2 class, generates, and repacks nothing on either (the README's fact:
upstream's wheel gets none of the repack speed-up); the oracle, told it is armv8-a, agrees.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from llama_wheels import oracle
from llama_wheels.binaries.wheel import cpu_variants, fixed_isa
from llama_wheels.config.cpus import load_cpus
from llama_wheels.core.cache import Cache
from llama_wheels.judges import verify
from llama_wheels.judges.matrix import expectation_for
from llama_wheels.plan import published_jobs
from tests.support.checkout import REPO, build_target, repo_config

TARGET = "linux-aarch64-official"


@pytest.fixture(scope="module")
def official_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # --no-verify: the emulated smoke test asks the wheel's record for its ISA, and upstream's build names none;
    # this module judges it instead, as the armv8-a build it is
    return build_target(tmp_path_factory, TARGET, "--no-verify")


def test_the_official_target_is_never_published() -> None:
    config = repo_config()
    assert config.target(TARGET).publish is False
    assert TARGET not in {job.target.name for job in published_jobs(config)}
    for workflow in (REPO / ".github" / "workflows").glob("*.yml"):
        assert TARGET not in workflow.read_text(), workflow


def test_upstream_cmake_arguments_only() -> None:
    switches = repo_config().target(TARGET).switches
    assert "arm_arch" not in switches and "all_variants" not in switches and "backend_dl" not in switches
    assert switches["native"] is False


def test_it_loads_everywhere_and_repacks_nothing(official_wheel: Path, cache: Cache) -> None:
    with zipfile.ZipFile(official_wheel) as archive:
        assert cpu_variants(archive.namelist()) == [] and fixed_isa(archive) is None  # one backend, no ISA claim
    cpus = load_cpus(REPO)
    for name in ("cortex-a53", "neoverse-n2"):
        result = verify.smoke_test(official_wheel, cpus[name], cache)
        assert result.repacked == {}, (name, result.repacked)
        assert len(result.tokens) == 8
        expectation = expectation_for(oracle.Build(fixed_isa="armv8-a"), cpus[name], {}, label=official_wheel.name)
        verify.judge(result, expectation, label=official_wheel.name)
