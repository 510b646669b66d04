"""Every type the pinned ggml repacks, on representative CPUs: the layout the oracle derives from the CPU's
features and the wheel's build (``Expectation.layout``) and the one the wheel suite derives from the CPU's
Q4_0 layout alone (``wheel_probe.expected_repack``) are the same, and are the ones ggml's rules give.

The expected layouts are typed once, in ``EXPECTED``; every other comparison here is between the two ways
of computing them through the oracle.
"""

from __future__ import annotations

import pytest

from llama_wheels import oracle
from llama_wheels.oracle import Build, Cpu
from tests.support.ggml import LINUX_ARM, cpus
from tests.support.probe import wheel_probe

# qemu's max,sve=off,sme=off: i8mm and dotprod without SVE (AmpereOne, Apple M2-M4 under Linux, Snapdragon X).
I8MM_NO_SVE = Cpu(features=frozenset({"dotprod", "fp16", "i8mm"}), sve_bits=0)


# Upstream's Linux list, without patch 0007's armv8.6_nosve (DOTPROD FP16 MATMUL_INT8): what the patch buys.
UPSTREAM_ARM = {name: features for name, features in LINUX_ARM.items() if name != "armv8.6_nosve"}


BUILDS = {
    "linux": (Build(variants=tuple(LINUX_ARM)), LINUX_ARM),
    "linux-upstream": (Build(variants=tuple(UPSTREAM_ARM)), UPSTREAM_ARM),
    **{isa: (Build(fixed_isa=isa), {}) for isa in ("armv8-a", "armv8.2-a+dotprod", "armv8.2-a+dotprod+fp16",
                                                     "armv8.6-a", "armv9-a", "armv9.2-a")},
}


TYPES = ("Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "MXFP4", "Q8_0", "Q1_0", "Q2_K")


_ = None


EXPECTED = [  # cpu, build, generation, the variant it loads, then one layout per TYPES (64 rows)
    ("cortex-a72", "linux", "repack", "armv8.0_1", (_, _, _, _, _, _, _, _, _)),
    ("neoverse-n1", "linux", "repack", "armv8.2_2",
     ("q4_0_4x4", "q4_K_8x4", "q5_K_8x4", "q6_K_8x4", "iq4_nl_4x4", "mxfp4_4x4", "q8_0_4x4", "q1_0_4x4", _)),
    ("max-sve256", "linux", "repack", "armv9.2_2",
     ("q4_0_8x8", "q4_K_8x8", "q5_K_8x8", "q6_K_8x8", "iq4_nl_4x4", "mxfp4_4x4", "q8_0_4x8", "q1_0_4x8", _)),
    ("max", "linux", "repack", "armv9.2_2",  # SVE-512: Q4_0's SVE kernel wants 256; the rest is i8mm's
     ("q4_0_4x8", "q4_K_8x8", "q5_K_8x8", "q6_K_8x8", "iq4_nl_4x4", "mxfp4_4x4", "q8_0_4x8", "q1_0_4x8", _)),
    # i8mm without SVE: patch 0007's variant gives the i8mm layouts ...
    ("i8mm-no-sve", "linux", "repack", "armv8.6_nosve",
     ("q4_0_4x8", "q4_K_8x8", "q5_K_8x8", "q6_K_8x8", "iq4_nl_4x4", "mxfp4_4x4", "q8_0_4x8", "q1_0_4x8", _)),
    # ... where upstream's Linux list (issue #13's gap) loads armv8.2_2 and its dotprod layouts.
    ("i8mm-no-sve", "linux-upstream", "repack", "armv8.2_2",
     ("q4_0_4x4", "q4_K_8x4", "q5_K_8x4", "q6_K_8x4", "iq4_nl_4x4", "mxfp4_4x4", "q8_0_4x4", "q1_0_4x4", _)),
    ("max-sve256", "linux-upstream", "repack", "armv9.2_2",  # the patch changes nothing for SVE CPUs
     ("q4_0_8x8", "q4_K_8x8", "q5_K_8x8", "q6_K_8x8", "iq4_nl_4x4", "mxfp4_4x4", "q8_0_4x8", "q1_0_4x8", _)),
    # 0.3.4 (generation aarch64) repacks Q4_0 and IQ4_NL only.
    ("neoverse-n1", "armv8.2-a+dotprod", "aarch64", None, ("q4_0_4x4", _, _, _, "iq4_nl_4x4", _, _, _, _)),
]


def all_cpus() -> dict[str, Cpu]:
    return {**cpus(), "i8mm-no-sve": I8MM_NO_SVE}


@pytest.mark.parametrize(("cpu", "build", "generation", "variant", "layouts"), EXPECTED,
                         ids=[f"{row[0]}-{row[1]}" for row in EXPECTED])
def test_each_type_on_representative_cpus(cpu: str, build: str, generation: str, variant: str | None,
                                          layouts: tuple[str | None, ...]) -> None:
    wheel, declared = BUILDS[build]
    e = oracle.expect(wheel, all_cpus()[cpu], declared)
    assert (e.supported, e.variant) == (True, variant)
    direct = {t: e.layout(t, 64, generation) for t in TYPES}
    from_q4_0 = {t: wheel_probe.expected_repack(t, 64, e.q4_0_layout, generation, "aarch64") for t in TYPES}
    assert direct == from_q4_0 == dict(zip(TYPES, layouts, strict=True))


@pytest.mark.parametrize("generation", oracle.GENERATIONS)
def test_the_q4_0_layout_tells_every_types_layout_on_arm(generation: str) -> None:
    """Every CPU class (and the i8mm-without-SVE one) x every build x every ggml type x row counts that hit
    each layout's divisibility: the wheel suite's derivation from the Q4_0 layout is the oracle's."""
    checked = 0
    for name, cpu in all_cpus().items():
        for build, (wheel, declared) in BUILDS.items():
            e = oracle.expect(wheel, cpu, declared)
            if not e.supported:
                continue
            for ggml_type in oracle.GGML_TYPES:
                for ne1 in (4, 8, 12, 64, 262):
                    got = wheel_probe.expected_repack(ggml_type, ne1, e.q4_0_layout, generation, "aarch64")
                    assert got == e.layout(ggml_type, ne1, generation), (name, build, ggml_type, ne1)
                    checked += got is not None
    assert checked > 100


def test_the_q4_0_layout_tells_every_types_layout_on_avx2() -> None:
    """x86: an AVX2 build's Q4_0 layout (8x8) gives the AVX2 layouts of Q4_K, IQ4_NL and MXFP4. Q2_K's needs
    AVX-512, which the Q4_0 layout cannot show: the suite predicts it only for code without AVX-512."""
    avx2 = frozenset({"avx2"})
    q4_0 = oracle.repack_layout("Q4_0", 64, code=avx2, arch="x86")
    assert q4_0 == "q4_0_8x8"
    for ggml_type in oracle.GGML_TYPES:
        for generation in oracle.GENERATIONS:
            assert wheel_probe.expected_repack(ggml_type, 64, q4_0, generation, "x86_64") == oracle.repack_layout(
                ggml_type, 64, code=avx2, arch="x86", generation=generation), (ggml_type, generation)
    assert {t: wheel_probe.expected_repack(t, 64, q4_0, "repack", "x86_64") for t in TYPES} == {
        "Q4_0": "q4_0_8x8", "Q4_K": "q4_K_8x8", "IQ4_NL": "iq4_nl_8x8", "MXFP4": "mxfp4_8x8",
        "Q5_K": None, "Q6_K": None, "Q8_0": None, "Q1_0": None, "Q2_K": None}

