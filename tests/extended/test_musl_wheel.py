"""The musllinux wheel in the emulated musl bed: the CPU matrix, and pip inside the musl Python installing it.

In the extended tier with the bed itself (test_musl_bed.py): building the musl Python from Debian's sources and
running the matrix in it take about 15 of the full tier's 60 minutes cold. The full tier builds the musl wheel,
repairs and audits it and checks its musllinux facts (tests/integration/builds/test_build.py); GitHub's
wheels.yml and release.yml run it natively in the musllinux container.

``llama-wheels test`` gets the musl wheel and the default (glibc) wheel together: the musl one runs in the musl
bed, the glibc one in the glibc bed (the wheel's tag decides, ``qemu.libc_of_wheel``), with the same
expectations per CPU class (variant, the layout of each type, repack on/off, greedy tokens identical across
CPUs); on top, the two wheels must agree with each other cell by cell.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_wheels.config.cpus import load_cpus
from llama_wheels.core.cache import Cache
from llama_wheels.emulation.musl_bed import ensure_musl_sysroot
from llama_wheels.emulation.qemu import run_python
from llama_wheels.judges.verify import run_smoke
from tests.support.checkout import REPO, pinned
from tests.support.musl import build_musl_wheel, musl_matches_glibc


@pytest.fixture(scope="module")
def musl_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_musl_wheel(tmp_path_factory)


def test_the_matrix_runs_the_musl_wheel_on_every_cpu_class_like_the_glibc_one(
        musl_wheel: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """Every CPU class (24 cells: 835 s measured under load)."""
    musl_matches_glibc(musl_wheel, tmp_path_factory, tmp_path, None)


def test_pip_in_the_musl_python_installs_the_musl_wheel_from_a_file_index_and_it_generates(
        musl_wheel: Path, tmp_path: Path, cache: Cache) -> None:
    bed = ensure_musl_sysroot(cache)
    cpu = load_cpus(REPO)["cortex-a76"]
    target, report = tmp_path / "target", tmp_path / "report.json"
    # pip is the bed's own (a pinned wheel in its site-packages); its dependencies too (--no-deps).
    installed = run_python(
        bed, cpu,
        ["-m", "pip", "--isolated", "--disable-pip-version-check", "install", "--no-cache-dir", "--no-compile",
         "--no-index", "--find-links", str(musl_wheel.parent), "--only-binary=:all:", "--no-deps",
         "--target", str(target), "--report", str(report), f"llama-cpp-python=={pinned().version}"],
        timeout=1200)
    assert installed.returncode == 0, "\n".join(installed.tail)
    entry = json.loads(report.read_text())["install"][0]
    assert entry["download_info"]["url"] == musl_wheel.as_uri()
    smoke = run_smoke(target, cpu, cache, label=f"{musl_wheel.name} installed by pip in the musl bed",
                      sysroot=bed)
    assert smoke.package == target / "llama_cpp" / "__init__.py"
    assert len(smoke.tokens) == 8 and smoke.layout == "q4_0_4x4"  # cortex-a76: dotprod, repacked
    print(f"\npip in the emulated musl python3.11 ({cpu.name}) installed {musl_wheel.name}; variant "
          f"{smoke.variant}, repack {smoke.layout}, greedy tokens {list(smoke.tokens)}")

