"""The wheel suite's CPU-variant check (wheel_tests: test_expected_cpu_variant_is_loaded), as the macos-14 job
runs it (LLAMA_WHEELS_EXPECT_VARIANT=apple_m1), proven on the default wheel under qemu: it passes on the
variant the oracle derives, and fails when the runner is not what CI says or the wheel lost its variant."""

from __future__ import annotations

from pathlib import Path

from llama_wheels.config.cpus import load_cpus
from llama_wheels.core.cache import Cache
from llama_wheels.emulation.qemu import install_wheel, run_python
from llama_wheels.emulation.sysroot import ensure_sysroot
from llama_wheels.judges.matrix import standalone_env
from tests.support.checkout import REPO
from tests.support.wheelfactory import rewritten


def variant_check(wheel: Path, cpu: str, work: Path, expect: str | None = None) -> tuple[int, str]:
    """Run only the suite's variant test on emulated ``cpu``: (exit code, output)."""
    work.mkdir(parents=True)
    site = install_wheel(wheel, work / "site")
    env = {**standalone_env(), **({"LLAMA_WHEELS_EXPECT_VARIANT": expect} if expect else {})}
    outcome = run_python(ensure_sysroot(Cache.from_env()), load_cpus(REPO)[cpu],
                         ["-m", "pytest", "-q", str(REPO / "wheel_tests"), "-p", "no:cacheprovider",
                          "-k", "test_expected_cpu_variant_is_loaded", "--basetemp", str(work / "tmp")],
                         pythonpath=[site], env=env, cwd=work, timeout=900)
    return outcome.returncode, outcome.output


def test_the_suite_checks_the_loaded_variant(default_wheel: Path, tmp_path: Path) -> None:
    code, output = variant_check(default_wheel, "neoverse-n1", tmp_path / "derived")
    assert code == 0 and "1 passed" in output, output[-3000:]
    code, output = variant_check(default_wheel, "neoverse-n1", tmp_path / "said", expect="armv8.2_2")
    assert code == 0 and "1 passed" in output, output[-3000:]
    # CI says the runner is another machine than the one the suite reads: a failure, not a trust.
    code, output = variant_check(default_wheel, "neoverse-n1", tmp_path / "wrong", expect="armv8.6_1")
    assert code != 0 and "LLAMA_WHEELS_EXPECT_VARIANT=armv8.6_1 but this CPU" in output, output[-3000:]
    # The wheel lost the variant neoverse-n1 must load: ggml falls back to armv8.2_1, and that fails.
    lost = rewritten(default_wheel, tmp_path / "lost", {"libggml-cpu-armv8.2_2.so": lambda _: None})
    code, output = variant_check(lost, "neoverse-n1", tmp_path / "lost-run")
    assert code != 0 and "ggml loaded CPU variant armv8.2_1, expected armv8.2_2" in output, output[-3000:]

