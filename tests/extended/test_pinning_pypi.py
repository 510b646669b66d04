"""`llama-wheels pin add` of the newest unpinned release from PyPI, then built, audited and run on every emulated
CPU class at the new pin: 5-6 min of compiling from nothing (scripts/test.sh --extended). The intake alone, with
nothing compiled, is tests/integration/network/test_pinning_pypi.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_wheels.config.cpus import load_cpus
from tests.support.checkout import REPO, cli
from tests.support.pins import newest_unpinned_release, pin_add


@pytest.fixture(scope="module")
def release() -> dict[str, str]:
    """The newest release on the index older than the default pin that has an sdist and no pin."""
    return newest_unpinned_release()


def test_a_fixed_isa_wheel_of_the_added_pin_passes_the_emulated_matrix(config_root: Path, release: dict[str, str],
                                                                       tmp_path: Path) -> None:
    """The whole way: pin add, then `build` (compiled, repaired, smoke-verified, ISA-audited) and `test` on
    every emulated CPU class, through the command line, at the new pin."""
    for part in ("src", "wheel_tests"):  # the matrix runs the checkout's wheel suite and standalone modules
        (config_root / part).symlink_to(REPO / part)
    code, out, err = pin_add(config_root, release["version"], "--name", "probe")
    assert code == 0, out + err
    dist, log = tmp_path / "dist", tmp_path / "build.log"
    built = cli("--config", str(config_root), "--log", str(log), "build", "linux-aarch64-armv8.2-dotprod",
                "--pin", "probe", "--dist", str(dist), cwd=config_root)
    assert built.returncode == 0, f"build failed (log {log}):\n{built.stderr[-3000:]}"
    [wheel] = dist.glob("*.whl")
    assert wheel.name.startswith(f"llama_cpp_python-{release['version']}-py3-none-")
    matrix = cli("--config", str(config_root), "--log", str(tmp_path / "test.log"), "test", str(wheel),
                 "--out", str(tmp_path / "reports"), cwd=config_root)
    assert matrix.returncode == 0, matrix.stdout + matrix.stderr[-3000:]
    report = json.loads((tmp_path / "reports" / "matrix.json").read_text())
    cells = {cell["cpu"]: cell for cell in report["cells"]}
    assert report["ok"] and len(cells) == len(load_cpus(config_root))
    assert cells["neoverse-n1"]["layout"] == "q4_0_4x4"  # dotprod: repacked at the new pin too

