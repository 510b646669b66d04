"""standalone/hostcpu.py: the one reader of an ARM CPU's features (native wheel-suite runs and emulated guests).

Pure cases here; the emulated guests' readings are checked against cpus.toml by
tests/unit/test_emulation.py::test_cpus_toml_features_are_what_qemu_reports, through the same module.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from llama_wheels.standalone import hostcpu
from llama_wheels.standalone.hostcpu import HostCpu, UnknownHost

# Linux uapi asm/hwcap.h, written out here so that the module's table is checked against the kernel's values.
FPHP, ASIMDHP, ASIMDDP, SVE, ATOMICS, FCMA = 1 << 9, 1 << 10, 1 << 20, 1 << 22, 1 << 8, 1 << 14
SVE2, I8MM, BF16, MOPS = 1 << 1, 1 << 13, 1 << 14, 1 << 43
# A Neoverse-N2-class hwcap reading: asimddp, fphp+asimdhp, sve; hwcap2 sve2, i8mm, bf16; 16-byte vectors.
N2_HWCAP = ASIMDDP | FPHP | ASIMDHP | SVE | 0b11
N2_HWCAP2 = SVE2 | I8MM | BF16


def test_a_neoverse_n2_reading() -> None:
    features, sve_bits = hostcpu.from_hwcaps(N2_HWCAP, N2_HWCAP2, 16)
    assert features == {"dotprod", "fp16", "sve", "sve2", "i8mm", "bf16"}
    assert sve_bits == 128


def test_fp16_needs_scalar_and_vector_half_precision() -> None:
    """As ggml: FPHP alone (or ASIMDHP alone) is not the fp16 vector arithmetic its variants are built for."""
    for half in (FPHP, ASIMDHP):
        features, _ = hostcpu.from_hwcaps(half | ASIMDDP, 0, -1)
        assert features == {"dotprod"}


def test_the_vector_length_counts_only_with_sve() -> None:
    assert hostcpu.from_hwcaps(ASIMDDP, 0, 32) == (frozenset({"dotprod"}), 0)
    # prctl's result carries flags above the length mask (PR_SVE_VL_INHERIT = 1 << 17)
    assert hostcpu.from_hwcaps(SVE, 0, (1 << 17) | 64)[1] == 512


def test_the_one_table_reads_every_feature_an_isa_can_imply() -> None:
    """hwcap_features: what the import guards check (their copies of HWCAPS: tests/unit/test_import_check.py),
    including the features of neither ggml nor the first hwcap word."""
    assert hostcpu.hwcap_features(N2_HWCAP | ATOMICS | FCMA, N2_HWCAP2 | MOPS) == {
        "dotprod", "fp16", "sve", "sve2", "i8mm", "bf16", "lse", "complxnum", "mops"}
    assert hostcpu.hwcap_features(FPHP, 0) == frozenset(), "fp16 needs both half-precision bits"


def test_an_apple_m1_reading() -> None:
    values = {"hw.optional.arm.FEAT_DotProd": 1, "hw.optional.arm.FEAT_FP16": 1, "hw.optional.arm.FEAT_I8MM": 0}
    assert hostcpu.from_sysctl(values) == {"dotprod", "fp16"}


def test_json_round_trip_and_an_unknown_feature() -> None:
    cpu = HostCpu(machine="aarch64", features=frozenset({"dotprod", "sve"}), sve_bits=256)
    assert HostCpu.from_json(cpu.to_json()) == cpu
    with pytest.raises(UnknownHost, match=r"unknown CPU features \['sve3'\]"):
        HostCpu.from_json('{"machine": "aarch64", "features": ["sve3"], "sve_bits": 0}')


@pytest.mark.skipif(platform.machine().lower() in hostcpu.ARM_MACHINES, reason="this host is an ARM CPU")
def test_a_host_it_cannot_judge_fails_instead_of_guessing() -> None:
    with pytest.raises(UnknownHost, match="is not an ARM CPU"):
        hostcpu.read()
    run = subprocess.run([sys.executable, hostcpu.__file__], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "UnknownHost" in run.stderr and "HOSTCPU" not in run.stdout

