"""Bad input through the command line: one line on stderr naming the culprit, exit code 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import cli, pinned
from .wheelfactory import built_wheel


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("llama-wheels: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_plan_prints_cmake_arguments_and_patches() -> None:
    result = cli("plan")
    assert result.returncode == 0
    assert "-DGGML_CPU_ALL_VARIANTS=ON" in result.stdout
    assert "0001-install-only-the-package.patch" in result.stdout


def test_unknown_target(tmp_path: Path) -> None:
    result = cli("--log", str(tmp_path / "log"), "build", "linux-arm64")
    assert result.returncode == 2
    assert "unknown target 'linux-arm64' (did you mean 'linux-aarch64'?)" in error_line(result)


def test_unknown_pin() -> None:
    version = pinned().version  # a version is not a pin's name
    result = cli("plan", "--pin", version)
    assert result.returncode == 2
    assert f"unknown pin '{version}'" in error_line(result)


def test_malformed_toml(config_root: Path) -> None:
    (config_root / "build_config/pins.toml").write_text("[pins\n")
    result = cli("--config", str(config_root), "plan")
    assert result.returncode == 2
    assert "pins.toml: malformed TOML" in error_line(result)


@pytest.mark.network
def test_option_the_pinned_source_does_not_define(config_root: Path, tmp_path: Path) -> None:
    pins = config_root / "build_config/pins.toml"
    pins.write_text(pins.read_text().replace('openmp = "GGML_OPENMP"', 'openmp = "GGML_OPENMP_RUNTIME"', 1))
    result = cli("--config", str(config_root), "--log", str(tmp_path / "log"), "fetch")
    assert result.returncode == 2
    assert (f"CMake option GGML_OPENMP_RUNTIME is not defined by llama-cpp-python {pinned().version}"
            in error_line(result))


@pytest.mark.network
def test_stale_patch_through_the_cli(config_root: Path, tmp_path: Path) -> None:
    patch = config_root / f"patches/{pinned().version}/0003-use-extra-bufts-keyword.patch"
    patch.write_text(patch.read_text().replace("         kv_overrides: Optional", "         kv_overridez: Optional"))
    result = cli("--config", str(config_root), "--log", str(tmp_path / "log"), "fetch")
    assert result.returncode == 2
    line = error_line(result)
    assert "patch 0003-use-extra-bufts-keyword.patch does not apply to llama_cpp/llama.py" in line


def test_two_targets_with_one_wheel_name_into_one_dist(tmp_path: Path) -> None:
    """Dispatch and fixed-ISA wheels of one platform share a file name: refused before compiling."""
    dist = tmp_path / "dist"
    result = cli("--log", str(tmp_path / "log"), "build", "linux-aarch64", "linux-aarch64-armv8.0",
                 "--dist", str(dist))
    assert result.returncode == 2
    assert (f"linux-aarch64@current and linux-aarch64-armv8.0@current make llama-cpp-python {pinned().version} wheels "
            "for linux-aarch64 with the same file name; give each its own --dist") in error_line(result)
    assert not dist.exists()


def test_a_dist_holding_another_targets_wheel_is_not_overwritten(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    theirs = built_wheel(dist, target="linux-aarch64-armv8.0", index="armv8.0")
    before = theirs.read_bytes()
    result = cli("--log", str(tmp_path / "log"), "build", "--dist", str(dist))
    assert result.returncode == 2
    assert (f"linux-aarch64-armv8.0@current (already in {theirs}) and linux-aarch64@current make"
            in error_line(result))
    assert theirs.read_bytes() == before
