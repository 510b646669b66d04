"""Bad input through the command line: one line on stderr naming the culprit, exit code 2."""

from __future__ import annotations

from pathlib import Path

from tests.support.checkout import cli, error_line, pinned
from tests.support.wheelfactory import built_wheel


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

