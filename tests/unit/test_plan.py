from __future__ import annotations

import pytest

from llama_wheels.config import load
from llama_wheels.core.errors import ConfigError
from llama_wheels.plan import describe, plan
from tests.support.checkout import REPO, pinned


def test_default_target_is_runtime_dispatch_with_repacking() -> None:
    [job] = plan(load(REPO))
    args = job.cmake_args()
    for expected in ("-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON", "-DGGML_CPU_REPACK=ON",
                     "-DGGML_NATIVE=OFF", "-DLLAMA_OPENSSL=OFF"):
        assert expected in args
    assert not any(a.startswith("-DGGML_CPU_ARM_ARCH") for a in args)


def test_logical_switches_map_per_revision() -> None:
    config = load(REPO)
    [current] = plan(config, ["linux-aarch64-armv8.2-dotprod"], "current")
    [legacy] = plan(config, ["linux-aarch64-armv8.2-dotprod"], "legacy")
    assert "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod" in current.cmake_args()
    assert "-DGGML_CPU_REPACK=ON" in current.cmake_args()
    # 0.3.4 has no GGML_CPU_ARM_ARCH: the ISA goes into the compiler flags; repack is GGML_CPU_AARCH64.
    assert "-DGGML_CPU_AARCH64=ON" in legacy.cmake_args()
    assert "-DCMAKE_C_FLAGS=-march=armv8.2-a+dotprod" in legacy.cmake_args()
    assert not any("LLAMA_OPENSSL" in a for a in legacy.cmake_args())  # absent at 0.3.4, asked off


def test_switch_the_pin_lacks_is_an_error() -> None:
    legacy = pinned("legacy").version
    with pytest.raises(ConfigError, match=rf"needs switch 'all_variants', which llama-cpp-python {legacy}"):
        plan(load(REPO), ["linux-aarch64"], "legacy")


def test_option_not_defined_by_the_pinned_source() -> None:
    [job] = plan(load(REPO))
    declared = frozenset({"GGML_NATIVE", "GGML_BACKEND_DL", "GGML_CPU_ALL_VARIANTS", "GGML_OPENMP", "LLAMA_OPENSSL"})
    with pytest.raises(ConfigError,
                       match=rf"CMake option GGML_CPU_REPACK is not defined by llama-cpp-python {pinned().version}"):
        job.check_against(declared)


def test_jobs_have_distinct_stable_keys() -> None:
    config = load(REPO)
    keys = {job.key for job in plan(config, list(config.targets))}
    assert len(keys) == len(config.targets)
    assert [j.key for j in plan(config)] == [j.key for j in plan(config)]


def test_describe_shows_args_and_patches() -> None:
    text = describe(plan(load(REPO)))
    assert "-DGGML_CPU_ALL_VARIANTS=ON" in text
    assert f"patches/{pinned().version}/0002-load-backends-and-check-cpu.patch" in text

