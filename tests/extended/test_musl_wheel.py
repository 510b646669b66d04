"""The musllinux wheel in the emulated musl bed: the CPU matrix, and pip inside the musl Python installing it.

The musl chain is in the extended tier, with the bed itself (test_musl_bed.py): the musl wheel's compile, the
musl Python built from Debian's sources and the matrix in it take about 25 min cold, which the full tier's 60
cannot hold beside the glibc and macOS builds. GitHub's wheels.yml and release.yml build the musl wheel with
cibuildwheel and test it natively in the musllinux container.

``llama-wheels test`` gets the musl wheel and the default (glibc) wheel together: the musl one runs in the musl
bed, the glibc one in the glibc bed (the wheel's tag decides, ``qemu.libc_of_wheel``), with the same
expectations per CPU class (variant, the layout of each type, repack on/off, greedy tokens identical across
CPUs); on top, the two wheels must agree with each other cell by cell.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from llama_wheels.binaries.wheel import cpu_variants
from llama_wheels.config.cpus import load_cpus
from llama_wheels.config.platforms import platform
from llama_wheels.core.cache import Cache
from llama_wheels.emulation.musl_bed import ensure_musl_sysroot
from llama_wheels.emulation.qemu import run_python
from llama_wheels.judges.verify import run_smoke
from llama_wheels.stages.repair import check_wheel
from tests.support.checkout import REPO, cli, pinned
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


def test_musl_wheel_is_musllinux_1_2_aarch64_with_the_default_wheels_variants(musl_wheel: Path,
                                                                             default_wheel: Path) -> None:
    """The musl target: auditwheel's musllinux_1_2_aarch64, libc by Alpine's name and nothing else from the
    system, no versioned symbol, the default wheel's CPU variants; `inspect` and the record say musl; the ISA
    audit passes (`build` ran it too)."""
    assert musl_wheel.name == f"llama_cpp_python-{pinned().version}-py3-none-musllinux_1_2_aarch64.whl"
    shown = subprocess.run([sys.executable, "-m", "auditwheel", "show", str(musl_wheel)],
                           capture_output=True, text=True, check=True).stdout
    assert 'consistent with the following platform tag: "musllinux_1_2_aarch64"' in " ".join(shown.split())
    facts = check_wheel(musl_wheel, platform("linux-aarch64-musl"))
    assert facts.external == ("libc.musl-aarch64.so.1",)
    assert all(lib.versions == () and lib.interpreter is None for lib in facts.libraries)
    with zipfile.ZipFile(musl_wheel) as musl, zipfile.ZipFile(default_wheel) as glibc:
        assert cpu_variants(musl.namelist()) == cpu_variants(glibc.namelist())
    inspected = cli("inspect", str(musl_wheel))
    assert inspected.returncode == 0, inspected.stderr
    assert "requires  musl libc (musllinux: Alpine)" in inspected.stdout
    assert "linux-aarch64-musl (linux-aarch64-musl, index cpu)" in inspected.stdout
    assert "-target aarch64-linux-musl" in inspected.stdout
    audited = cli("audit", str(musl_wheel))
    assert audited.returncode == 0, audited.stdout + audited.stderr
