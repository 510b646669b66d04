"""The musllinux wheel of the default pin and the emulated matrix run on it beside the glibc wheel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_wheels.config.cpus import load_cpus
from llama_wheels.emulation.qemu import libc_of_wheel
from tests.support.checkout import REPO, build_target, cli

MUSL_TARGET = "linux-aarch64-musl"


def build_musl_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheel = build_target(tmp_path_factory, MUSL_TARGET)
    assert wheel.name.endswith("-musllinux_1_2_aarch64.whl"), wheel.name
    return wheel


def musl_matches_glibc(musl_wheel: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
                       classes: tuple[str, ...] | None) -> None:
    """``llama-wheels test`` on the musl and the glibc wheel on ``classes`` (None: every CPU class): every cell
    passes and the two wheels agree cell by cell."""
    glibc_wheel = build_target(tmp_path_factory)
    assert (libc_of_wheel(musl_wheel), libc_of_wheel(glibc_wheel)) == ("musl", "glibc")
    cpus = list(classes or load_cpus(REPO))
    result = cli("--log", str(tmp_path / "test.log"), "test", str(musl_wheel), str(glibc_wheel),
                 *(arg for cpu in cpus for arg in ("--cpu", cpu)),
                 "--out", str(tmp_path / "report"), "--jobs", "2", timeout=5400)
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    cells = json.loads((tmp_path / "report" / "matrix.json").read_text())["cells"]
    by_wheel = {name: {c["cpu"]: c for c in cells if c["wheel"] == name} for name in (musl_wheel.name,
                                                                                         glibc_wheel.name)}
    musl, glibc = by_wheel[musl_wheel.name], by_wheel[glibc_wheel.name]
    assert sorted(musl) == sorted(glibc) == sorted(cpus)
    for cpu in cpus:
        assert musl[cpu]["verdict"] == "pass", musl[cpu]
        same = ("variant", "layout", "layouts", "repacked", "tokens")
        assert {k: musl[cpu][k] for k in same} == {k: glibc[cpu][k] for k in same}, cpu
