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
from llama_wheels.standalone.hostcpu import HWCAP2_BITS, HWCAP_BITS, HostCpu, UnknownHost

# A Neoverse-N2-class hwcap reading: asimddp, fphp+asimdhp, sve; hwcap2 sve2, i8mm, bf16; 16-byte vectors.
N2_HWCAP = HWCAP_BITS["asimddp"] | HWCAP_BITS["fphp"] | HWCAP_BITS["asimdhp"] | HWCAP_BITS["sve"] | 0b11


N2_HWCAP2 = HWCAP2_BITS["sve2"] | HWCAP2_BITS["i8mm"] | HWCAP2_BITS["bf16"]


def test_a_neoverse_n2_reading() -> None:
    features, sve_bits = hostcpu.from_hwcaps(N2_HWCAP, N2_HWCAP2, 16)
    assert features == {"dotprod", "fp16", "sve", "sve2", "i8mm", "bf16"}
    assert sve_bits == 128


def test_fp16_needs_scalar_and_vector_half_precision() -> None:
    """As ggml: FPHP alone (or ASIMDHP alone) is not the fp16 vector arithmetic its variants are built for."""
    for half in ("fphp", "asimdhp"):
        features, _ = hostcpu.from_hwcaps(HWCAP_BITS[half] | HWCAP_BITS["asimddp"], 0, -1)
        assert features == {"dotprod"}


def test_the_vector_length_counts_only_with_sve() -> None:
    assert hostcpu.from_hwcaps(HWCAP_BITS["asimddp"], 0, 32) == (frozenset({"dotprod"}), 0)
    # prctl's result carries flags above the length mask (PR_SVE_VL_INHERIT = 1 << 17)
    assert hostcpu.from_hwcaps(HWCAP_BITS["sve"], 0, (1 << 17) | 64)[1] == 512


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

