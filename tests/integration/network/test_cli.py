"""Bad input through the command line: one line on stderr naming the culprit, exit code 2."""

from __future__ import annotations

from pathlib import Path

from tests.support.checkout import cli, error_line, pinned


def test_option_the_pinned_source_does_not_define(config_root: Path, tmp_path: Path) -> None:
    pins = config_root / "build_config/pins.toml"
    pins.write_text(pins.read_text().replace('openmp = "GGML_OPENMP"', 'openmp = "GGML_OPENMP_RUNTIME"', 1))
    result = cli("--config", str(config_root), "--log", str(tmp_path / "log"), "fetch")
    assert result.returncode == 2
    assert (f"CMake option GGML_OPENMP_RUNTIME is not defined by llama-cpp-python {pinned().version}"
            in error_line(result))


def test_stale_patch_through_the_cli(config_root: Path, tmp_path: Path) -> None:
    patch = config_root / f"patches/{pinned().version}/0003-use-extra-bufts-keyword.patch"
    patch.write_text(patch.read_text().replace("         kv_overrides: Optional", "         kv_overridez: Optional"))
    result = cli("--config", str(config_root), "--log", str(tmp_path / "log"), "fetch")
    assert result.returncode == 2
    line = error_line(result)
    assert "patch 0003-use-extra-bufts-keyword.patch does not apply to llama_cpp/llama.py" in line

