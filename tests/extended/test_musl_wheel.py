"""The musllinux wheel in the emulated musl bed: the CPU matrix, and pip inside the musl Python installing it.

``llama-wheels test`` gets the musl wheel and the default (glibc) wheel together: the musl one runs in the musl
bed, the glibc one in the glibc bed (the wheel's tag decides, ``qemu.libc_of_wheel``), with the same
expectations per CPU class (variant, the layout of each type, repack on/off, greedy tokens identical across
CPUs); on top, the two wheels must agree with each other cell by cell.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.musl import build_musl_wheel, musl_matches_glibc


def test_the_matrix_runs_the_musl_wheel_on_every_cpu_class_like_the_glibc_one(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """Every CPU class (24 cells: 835 s measured under load); the full tier runs four representative ones."""
    musl_matches_glibc(build_musl_wheel(tmp_path_factory), tmp_path_factory, tmp_path, None)
