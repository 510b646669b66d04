"""The oracle (``llama_wheels.oracle``): ggml's variant choice and repack rules, pure, against data of the pin.

``PINNED_CMAKE`` is the CPU-variant part of the pinned ggml/src/CMakeLists.txt (llama-cpp-python 0.3.36) as
our patch series leaves it (0007 adds armv8.6_nosve), trimmed; tests/unit/test_matrix_rules.py checks that the
prepared tree declares the same Linux and macOS ARM variants.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from llama_wheels import oracle
from llama_wheels.oracle import Build, Cpu, OracleError
from tests.support.checkout import REPO
from tests.support.ggml import LINUX_ARM, PINNED_CMAKE, cpus

DARWIN_ARM = oracle.declared_arm_variants(PINNED_CMAKE, "Darwin")


EVERYTHING = Cpu(features=frozenset(oracle.ARM_FEATURES), sve_bits=256)


def one_line(exc: pytest.ExceptionInfo[OracleError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_linux_arm_variants_are_chosen_by_their_if_blocks_not_their_names() -> None:
    assert list(LINUX_ARM) == ["armv8.0_1", "armv8.2_1", "armv8.2_2", "armv8.2_3", "armv8.6_nosve", "armv8.6_1",
                               "armv8.6_2", "armv9.2_1", "armv9.2_2"]
    assert LINUX_ARM["armv8.2_2"] == {"dotprod", "fp16"}
    assert oracle.declared_arm_variants(PINNED_CMAKE, "Android")["android_armv9.0_1"] == {
        "dotprod", "i8mm", "fp16", "sve2"}
    # A Linux block renamed so that no name says "armv": still found, by its block.
    renamed = PINNED_CMAKE.replace("(armv8.0_1)", "(generic)")
    assert "generic" in oracle.declared_arm_variants(renamed)
    # The same variant moved into the else() branch: no longer Linux's.
    moved = PINNED_CMAKE.replace('MATCHES "Linux"', 'MATCHES "Haiku"')
    assert oracle.declared_arm_variants(moved) == {}


def test_apple_variants_come_from_the_apple_block() -> None:
    """macOS: CMAKE_SYSTEM_NAME Darwin takes ggml's ``elseif (APPLE)`` branch; each variant with the -march
    ggml-cpu/CMakeLists.txt compiles it with (NOSVE: no SVE although SME raises the level to armv9.2-a)."""
    assert dict(DARWIN_ARM) == {"apple_m1": {"dotprod"}, "apple_m2_m3": {"dotprod", "i8mm"},
                                "apple_m4": {"dotprod", "i8mm", "sme"}}
    builds = oracle.declared_arm_builds(PINNED_CMAKE, "Darwin")
    assert {name: build.march for name, build in builds.items()} == {
        "apple_m1": "armv8.2-a+dotprod", "apple_m2_m3": "armv8.6-a+dotprod+i8mm",
        "apple_m4": "armv9.2-a+dotprod+i8mm+nosve+sme"}
    assert oracle.declared_arm_builds(PINNED_CMAKE)["armv9.2_1"].march == "armv9.2-a+dotprod+fp16+sve+i8mm+sme"
    # Linux's variants are not Darwin's, nor the other way round.
    assert not set(DARWIN_ARM) & set(LINUX_ARM)
    with pytest.raises(OracleError, match=r"CPU variant apple_m5: unknown ggml CMake feature 'SME2'") as exc:
        oracle.variant_march("apple_m5", ["DOTPROD", "SME2"])
    one_line(exc)


@pytest.mark.parametrize(("features", "variant", "layout"), [
    ({"dotprod", "fp16"}, "apple_m1", "q4_0_4x4"),  # M1 (the macos-14 runner)
    ({"dotprod", "fp16", "i8mm", "bf16"}, "apple_m2_m3", "q4_0_4x8"),  # M2, M3
    ({"dotprod", "fp16", "i8mm", "bf16", "sme"}, "apple_m4", "q4_0_4x8"),  # M4: SME, no SVE
])
def test_apple_silicon_gets_its_variant(features: set[str], variant: str, layout: str) -> None:
    cpu = Cpu(features=frozenset(features) & frozenset(oracle.ARM_FEATURES))
    got = oracle.expect(Build(variants=tuple(DARWIN_ARM)), cpu, DARWIN_ARM)
    assert (got.variant, got.q4_0_layout) == (variant, layout)


def test_a_condition_over_several_lines_keeps_the_blocks_in_step() -> None:
    text = 'if (\n    A OR\n    B\n)\n  set(X 1)\nendif()\n' + PINNED_CMAKE
    assert oracle.declared_arm_variants(text) == LINUX_ARM
    with pytest.raises(OracleError, match=r"line 1: endif\(\) without if\(\)") as exc:
        oracle.declared_cmake_variants("endif()\n" + PINNED_CMAKE)
    one_line(exc)


def test_an_unknown_cmake_token_is_a_clear_error_not_a_key_error() -> None:
    assert oracle.cmake_features("apple_m4", ["DOTPROD", "MATMUL_INT8", "NOSVE", "SME"]) == {"dotprod", "i8mm", "sme"}
    with pytest.raises(OracleError, match=r"CPU variant armv9.4_1: unknown ggml CMake feature 'BF16'") as exc:
        oracle.declared_arm_variants(PINNED_CMAKE.replace("SVE2 SME)", "SVE2 SME BF16)").replace(
            "armv9.2_2 ", "armv9.4_1 "))
    assert "CMAKE_FEATURES" in one_line(exc)


def test_score_is_ggmls_weighted_sum() -> None:
    """cpu-feats.cpp: 1 + 2 dotprod + 4 fp16 + 8 sve + 16 i8mm + 32 sve2 + 64 sme; 0 if one is missing."""
    assert [oracle.score(LINUX_ARM[v], EVERYTHING) for v in LINUX_ARM] == [1, 3, 7, 15, 23, 31, 63, 95, 127]
    n1 = cpus()["neoverse-n1"]
    assert [oracle.score(LINUX_ARM[v], n1) for v in LINUX_ARM] == [1, 3, 7, 0, 0, 0, 0, 0, 0]
    with pytest.raises(OracleError, match="ggml scores no ARM feature bf16"):
        oracle.score(frozenset({"bf16"}), EVERYTHING)


def test_on_128_bit_sve_an_sve_variant_scores_just_below_its_neon_sibling() -> None:
    """Patch 0009: at NEON's width SVE counts -2 and SVE2 1: below the NEON sibling, SVE2 above SVE alone; every
    SVE variant still loads (score > 0), wider SVE is scored as upstream, and SME keeps its weight."""
    n2 = cpus()["neoverse-n2"]
    scores = {v: oracle.score(LINUX_ARM[v], n2) for v in LINUX_ARM}
    assert scores == {"armv8.0_1": 1, "armv8.2_1": 3, "armv8.2_2": 7, "armv8.2_3": 5, "armv8.6_nosve": 23,
                      "armv8.6_1": 21, "armv8.6_2": 22, "armv9.2_1": 0, "armv9.2_2": 0}
    assert oracle.choose_variant(list(LINUX_ARM), LINUX_ARM, n2).variant == "armv8.6_nosve"
    # without the NEON sibling (upstream's list), the SVE variant is still chosen over armv8.2_2
    upstream = {v: f for v, f in LINUX_ARM.items() if v != "armv8.6_nosve"}
    assert oracle.choose_variant(list(upstream), upstream, n2).variant == "armv8.6_2"
    wide = Cpu(features=n2.features, sve_bits=256, known=n2.known)
    assert oracle.choose_variant(list(LINUX_ARM), LINUX_ARM, wide).variant == "armv8.6_2"
    sme_128 = Cpu(features=frozenset(oracle.ARM_FEATURES), sve_bits=128)
    assert oracle.choose_variant(list(LINUX_ARM), LINUX_ARM, sme_128).variant == "armv9.2_2"


def test_non_nested_variants_are_chosen_by_score_not_by_feature_count() -> None:
    declared = {"wide": frozenset({"dotprod", "fp16", "sve"}),  # 3 features, score 15
                "deep": frozenset({"dotprod", "i8mm"})}  # 2 features, score 19
    choice = oracle.choose_variant(["wide", "deep"], declared, EVERYTHING)
    assert (choice.variant, dict(choice.scores)) == ("deep", {"deep": 19, "wide": 15})
    # The pin's own case: armv8.6_2 and armv9.2_1 have five features each; SME outweighs SVE2.
    pair = oracle.choose_variant(["armv8.6_2", "armv9.2_1"], LINUX_ARM, EVERYTHING)
    assert pair.variant == "armv9.2_1"


def test_dispatch_expectations_on_every_emulated_cpu() -> None:
    wheel = Build(variants=tuple(LINUX_ARM))
    got = {name: (e.variant, e.q4_0_layout)
           for name, cpu in cpus().items() for e in [oracle.expect(wheel, cpu, LINUX_ARM)]}
    assert got == {
        "cortex-a53": ("armv8.0_1", "none"),
        "cortex-a72": ("armv8.0_1", "none"),
        "cortex-a55": ("armv8.2_2", "q4_0_4x4"),
        "cortex-a76": ("armv8.2_2", "q4_0_4x4"),
        "neoverse-n1": ("armv8.2_2", "q4_0_4x4"),
        "a64fx": ("armv8.0_1", "none"),  # SVE-512 but no dotprod: every other variant needs it
        "neoverse-v1": ("armv8.6_1", "q4_0_8x8"),  # Graviton3: SVE-256 + i8mm, no SVE2
        "neoverse-n2": ("armv8.6_nosve", "q4_0_4x8"),  # 128-bit SVE: the NEON sibling (patch 0009)
        "cortex-a710": ("armv8.6_nosve", "q4_0_4x8"),
        "max-nosve": ("armv8.6_nosve", "q4_0_4x8"),  # i8mm without SVE: patch 0007's variant
        "max": ("armv9.2_2", "q4_0_4x8"),  # i8mm, but 512-bit SVE: the 8x8 SVE kernel needs 256
        "max-sve256": ("armv9.2_2", "q4_0_8x8"),
    }


def test_only_the_variants_shipped_are_candidates() -> None:
    """The sabotaged default wheel (armv8.2+ libraries deleted) can only load armv8.0_1 on neoverse-n1."""
    e = oracle.expect(Build(variants=("armv8.0_1",)), cpus()["neoverse-n1"], LINUX_ARM)
    assert (e.variant, e.q4_0_layout, dict(e.scores)) == ("armv8.0_1", "none", {"armv8.0_1": 1})


@pytest.mark.parametrize(("shipped", "declared", "message"), [
    (("armv8.0_1",), {}, "declares no CPU variant"),
    ((), LINUX_ARM, "ships no CPU variant"),
    (("armv8.0_1", "armv8.7_1"), LINUX_ARM, "does not declare: armv8.7_1"),
])
def test_an_empty_or_unknown_variant_set_is_an_error(shipped: tuple[str, ...], declared: dict[str, frozenset[str]],
                                                     message: str) -> None:
    with pytest.raises(OracleError, match=message) as exc:
        oracle.choose_variant(shipped, declared, EVERYTHING)
    one_line(exc)


def test_an_empty_declared_set_fails_a_dispatch_wheel_but_not_a_fixed_isa_one() -> None:
    with pytest.raises(OracleError, match="declares no CPU variant"):
        oracle.expect(Build(variants=("armv8.0_1",)), EVERYTHING, {})
    assert oracle.expect(Build(fixed_isa="armv8-a"), EVERYTHING, {}).q4_0_layout == "none"


def test_variants_scoring_alike_cannot_be_predicted() -> None:
    with pytest.raises(OracleError, match="score 3 alike"):
        oracle.choose_variant(["a", "b"], {"a": frozenset({"dotprod"}), "b": frozenset({"dotprod"})}, EVERYTHING)


def test_architecture_levels_imply_their_mandatory_features() -> None:
    assert oracle.arch_features("armv8-a") == oracle.arch_features("armv8.3-a") == frozenset()
    assert oracle.arch_features("armv8.4-a") == {"dotprod"}
    assert oracle.arch_features("armv8.6-a") == {"dotprod", "i8mm", "bf16"}
    assert oracle.arch_features("armv8.9-a") == {"dotprod", "i8mm", "bf16"}
    assert oracle.arch_features("armv9-a") == {"dotprod", "sve", "sve2", "fp16"}
    assert oracle.arch_features("armv9.2-a") == {"dotprod", "i8mm", "bf16", "sve", "sve2", "fp16"}
    assert oracle.isa_features("armv8.2-a+dotprod+fp16") == {"dotprod", "fp16"}
    assert oracle.isa_features("armv8.2-a+sve2") == {"sve2", "sve", "fp16"}
    assert oracle.isa_features("armv9-a+nosve") == {"dotprod", "fp16"}
    for level in ("armv10-a", "armv8.10-a", "armv9.5-a", "armv8.2"):
        with pytest.raises(OracleError, match="unknown ARM architecture level") as exc:
            oracle.arch_features(level)
        one_line(exc)


@pytest.mark.parametrize(("isa", "cpu", "missing", "layout"), [
    # A bare level is judged by what it implies: armv8.6-a needs bf16 and i8mm, which Neoverse N1 lacks.
    ("armv8.6-a", "neoverse-n1", ("bf16", "i8mm"), None),
    ("armv8.6-a", "max", (), "q4_0_4x8"),
    ("armv8.6-a", "max-sve256", (), "q4_0_4x8"),  # no SVE in armv8.6-a: not the 8x8 SVE kernel
    ("armv8.4-a", "cortex-a72", ("dotprod",), None),
    ("armv8.4-a", "neoverse-n1", (), "q4_0_4x4"),
    ("armv9-a", "neoverse-n1", ("sve", "sve2"), None),
    ("armv9-a", "max-sve256", (), "q4_0_4x4"),  # SVE2 without i8mm: dotprod kernel
    ("armv9.2-a", "max-sve256", (), "q4_0_8x8"),
    ("armv8.2-a+dotprod", "cortex-a53", ("dotprod",), None),
    ("armv8.2-a+dotprod", "max", (), "q4_0_4x4"),  # built without i8mm: dotprod kernel
    ("armv8-a", "max-sve256", (), "none"),
])
def test_fixed_isa_expectations(isa: str, cpu: str, missing: tuple[str, ...], layout: str | None) -> None:
    e = oracle.expect(Build(fixed_isa=isa), cpus()[cpu], {})
    assert (e.supported, e.missing, e.q4_0_layout, e.variant) == (not missing, missing, layout, None)


def test_a_wheel_recording_nothing_has_no_layout_to_predict() -> None:
    e = oracle.expect(Build(), EVERYTHING, LINUX_ARM)
    assert (e.supported, e.q4_0_layout) == (True, None)
    with pytest.raises(OracleError, match=r"neither CPU variants nor cpu-isa\.txt"):
        e.layout("Q4_0", 64)


def test_a_cpu_description_names_every_feature() -> None:
    with pytest.raises(OracleError, match="lacks sme, bf16, sve_bits") as exc:
        Cpu.from_flags({"dotprod": True, "fp16": True, "i8mm": False, "sve": False, "sve2": False})
    one_line(exc)
    # bf16 is part of the CPU model (an armv8.6-a wheel needs it); features it does not cover (lse here)
    # cannot make a CPU "lack" them.
    assert cpus()["max"].lacks({"bf16", "i8mm"}) == ()
    assert cpus()["neoverse-n1"].lacks({"bf16", "i8mm", "lse"}) == ("bf16", "i8mm")
    assert cpus()["neoverse-v1"].lacks({"bf16", "i8mm"}) == ()


I8MM_SVE = frozenset({"dotprod", "fp16", "sve", "i8mm"})


@pytest.mark.parametrize(("ggml_type", "ne1", "code", "sve_bits", "arch", "generation", "layout"), [
    ("Q4_0", 64, I8MM_SVE, 256, "arm", "repack", "q4_0_8x8"),
    ("Q4_0", 12, I8MM_SVE, 256, "arm", "repack", "q4_0_4x8"),  # 12 rows: not 8x8, the i8mm 4-row rule next
    ("Q4_0", 262, I8MM_SVE, 256, "arm", "repack", None),  # a multiple of neither 8 nor 4
    ("Q4_0", 6, frozenset({"dotprod"}), 0, "arm", "repack", None),
    ("Q4_0", 64, I8MM_SVE, 512, "arm", "repack", "q4_0_4x8"),  # the SVE kernel needs 256-bit vectors
    ("Q4_0", 64, frozenset({"dotprod", "sve"}), 256, "arm", "repack", "q4_0_4x4"),
    ("Q4_0", 64, frozenset(), 0, "arm", "repack", None),
    ("Q4_0", 64, frozenset({"avx2"}), 0, "x86", "repack", "q4_0_8x8"),
    ("Q4_0", 12, frozenset({"avx2"}), 0, "x86", "repack", None),  # x86 has no 4-row Q4_0 layout
    ("Q4_0", 12, I8MM_SVE, 256, "arm", "aarch64", "q4_0_4x8"),  # 0.3.4: the same Q4_0 rules
    ("Q8_0", 64, I8MM_SVE, 256, "arm", "repack", "q8_0_4x8"),
    ("Q8_0", 64, frozenset({"dotprod"}), 0, "arm", "repack", "q8_0_4x4"),
    ("Q8_0", 6, frozenset({"dotprod"}), 0, "arm", "repack", None),
    ("Q8_0", 64, frozenset({"dotprod"}), 0, "arm", "aarch64", None),  # 0.3.4 never repacks Q8_0
    ("Q8_0", 64, frozenset({"avx2"}), 0, "x86", "repack", None),  # nor does x86
    ("F16", 64, I8MM_SVE, 256, "arm", "repack", None),
    # K-quants: i8mm or dotprod only, 8 rows either way; no SVE-256 case.
    ("Q4_K", 64, I8MM_SVE, 256, "arm", "repack", "q4_K_8x8"),
    ("Q4_K", 64, frozenset({"i8mm"}), 0, "arm", "repack", "q4_K_8x8"),
    ("Q4_K", 64, frozenset({"dotprod", "sve"}), 256, "arm", "repack", "q4_K_8x4"),
    ("Q4_K", 12, I8MM_SVE, 256, "arm", "repack", None),  # 12 rows: no 4-row K layout to fall back to
    ("Q4_K", 64, frozenset({"avx2"}), 0, "x86", "repack", "q4_K_8x8"),
    ("Q4_K", 64, I8MM_SVE, 256, "arm", "aarch64", None),  # 0.3.4 repacks no K-quant
    ("Q5_K", 64, I8MM_SVE, 512, "arm", "repack", "q5_K_8x8"),
    ("Q5_K", 64, frozenset({"avx2"}), 0, "x86", "repack", None),  # x86: Q4_K and Q2_K only
    ("Q6_K", 64, frozenset({"dotprod"}), 0, "arm", "repack", "q6_K_8x4"),
    ("Q2_K", 64, frozenset({"avx2"}), 0, "x86", "repack", None),  # Q2_K's layout needs AVX-512
    ("Q2_K", 64, frozenset({"avx2", "avx512"}), 0, "x86", "repack", "q2_K_8x8"),
    ("Q2_K", 64, I8MM_SVE, 256, "arm", "repack", None),  # and is x86's only
    ("Q3_K", 64, I8MM_SVE, 256, "arm", "repack", None),  # a ggml type nothing repacks
    # IQ4_NL and MXFP4: dotprod 4x4 on ARM even with i8mm; 8x8 with AVX2.
    ("IQ4_NL", 64, I8MM_SVE, 256, "arm", "repack", "iq4_nl_4x4"),
    ("IQ4_NL", 12, frozenset({"dotprod"}), 0, "arm", "aarch64", "iq4_nl_4x4"),  # 0.3.4 repacks IQ4_NL too
    ("IQ4_NL", 64, frozenset({"avx2"}), 0, "x86", "aarch64", None),  # but not on x86
    ("IQ4_NL", 64, frozenset({"avx2"}), 0, "x86", "repack", "iq4_nl_8x8"),
    ("MXFP4", 64, I8MM_SVE, 256, "arm", "repack", "mxfp4_4x4"),
    ("MXFP4", 12, frozenset({"avx2"}), 0, "x86", "repack", None),
    ("Q1_0", 64, I8MM_SVE, 256, "arm", "repack", "q1_0_4x8"),
    ("Q1_0", 4, frozenset({"dotprod"}), 0, "arm", "repack", "q1_0_4x4"),
])
def test_repack_layout_per_weight(ggml_type: str, ne1: int, code: frozenset[str], sve_bits: int, arch: str,
                                  generation: str, layout: str | None) -> None:
    assert oracle.repack_layout(ggml_type, ne1, code=code, sve_bits=sve_bits, arch=arch,
                                generation=generation) == layout


def test_a_type_outside_the_pinned_ggml_is_an_error_not_a_guess() -> None:
    with pytest.raises(OracleError, match="'Q4_0_4_4' is no ggml type of the pinned sources") as exc:
        oracle.repack_layout("Q4_0_4_4", 64, code=I8MM_SVE)
    assert "GGML_TYPES" in one_line(exc)
    with pytest.raises(OracleError, match="unknown repack generation"):
        oracle.repack_layout("Q4_0", 64, code=I8MM_SVE, generation="cpu_aarch64")
    assert set(oracle.REPACK_RULES) <= set(oracle.GGML_TYPES)  # a typo in the table: a type ggml lacks
    assert oracle.repack_layout("Q3_K", 64, code=I8MM_SVE) is None  # a ggml type without rules: never


@pytest.mark.parametrize("arch", ["arm", "x86"])
@pytest.mark.parametrize("generation", oracle.GENERATIONS)
def test_the_code_behind_a_layout_gives_that_layout(arch: str, generation: str) -> None:
    """What the wheel suite, told a CPU's Q4_0 layout, derives its other expectations from; for every type."""
    for ggml_type in oracle.GGML_TYPES:
        layouts = oracle.type_layouts(ggml_type, arch, generation)
        for layout in layouts:
            code, bits = oracle.code_for_layout(ggml_type, layout, arch, generation)
            got = oracle.repack_layout(ggml_type, oracle._ANY_ROWS, code=code, sve_bits=bits, arch=arch,
                                       generation=generation)
            assert (got or "none") == layout, (ggml_type, layout)
        assert (layouts == ("none",)) == (not oracle.type_rules(ggml_type, arch, generation)), ggml_type


def test_the_q4_0_helpers_are_the_general_ones() -> None:
    assert oracle.q4_0_layouts() == ("q4_0_4x4", "q4_0_4x8", "q4_0_8x8", "none")
    assert oracle.q4_0_layouts("x86") == ("q4_0_8x8", "none")
    assert oracle.type_layouts("Q4_K") == ("q4_K_8x4", "q4_K_8x8", "none")
    assert oracle.type_layouts("IQ4_NL", "arm", "aarch64") == ("iq4_nl_4x4", "none")
    assert oracle.code_for_q4_0_layout("q4_0_4x8") == ({"i8mm", "dotprod"}, 0)
    assert oracle.code_for_q4_0_layout("q4_0_8x8") == ({"sve", "i8mm", "dotprod"}, 256)
    assert oracle.code_for_layout("Q4_K", "q4_K_8x8") == ({"i8mm", "dotprod"}, 0)
    assert oracle.code_for_q4_0_layout("none", "x86") == (frozenset(), 0)
    with pytest.raises(OracleError, match="'q4_0_4x4' is no Q4_0 layout on x86; one of q4_0_8x8, none") as exc:
        oracle.code_for_q4_0_layout("q4_0_4x4", "x86")
    one_line(exc)
    with pytest.raises(OracleError, match="'q4_K_8x4' is no Q4_K layout on arm; one of none"):
        oracle.code_for_layout("Q4_K", "q4_K_8x4", generation="aarch64")


def test_every_layout_interleaves_the_rows_ggml_prints_first() -> None:
    """``tensor_traits<block, INTER_SIZE, NB_COLS>`` is logged NB_COLS x INTER_SIZE: q4_K_8x4 is 8 rows."""
    rows = {r.layout: r.rows for rules in oracle.REPACK_RULES.values() for r in rules}
    assert rows == {"q4_0_8x8": 8, "q4_0_4x8": 4, "q4_0_4x4": 4, "q4_K_8x8": 8, "q4_K_8x4": 8, "q2_K_8x8": 8,
                    "q5_K_8x8": 8, "q5_K_8x4": 8, "q6_K_8x8": 8, "q6_K_8x4": 8, "iq4_nl_8x8": 8, "iq4_nl_4x4": 4,
                    "mxfp4_8x8": 8, "mxfp4_4x4": 4, "q8_0_4x8": 4, "q8_0_4x4": 4, "q1_0_4x8": 4, "q1_0_4x4": 4}
    assert oracle._ANY_ROWS == 8


def test_the_repack_log() -> None:
    log = ("load_tensors: ...\nrepack: repack tensor blk.0.attn_q.weight with q4_0_4x4\n"
           "repack: repack tensor output.weight with q8_0_4x8\n"
           "repack: repack tensor blk.0.ffn_down.weight with q4_K_8x4\n"
           "repack: repack tensor blk.0.ffn_up.weight with iq4_nl_4x4\n"
           "repack: repack tensor blk.0.attn_q.weight with q4_0_4x4\n")
    assert oracle.repacked_tensors(log) == {"blk.0.attn_q.weight": "q4_0_4x4", "output.weight": "q8_0_4x8",
                                            "blk.0.ffn_down.weight": "q4_K_8x4", "blk.0.ffn_up.weight": "iq4_nl_4x4"}
    assert oracle.layout_summary(oracle.repacked_tensors(log)) == "iq4_nl_4x4, q4_0_4x4, q4_K_8x4, q8_0_4x8"
    assert oracle.layout_summary({}) == "none"
    with pytest.raises(OracleError, match="repacked as both q4_0_4x4 and q4_0_8x8"):
        oracle.repacked_tensors(log + "repack: repack tensor blk.0.attn_q.weight with q4_0_8x8\n")
    assert [oracle.layout_rows(x) for x in ("q4_0_8x8", "q4_0_4x8", "q8_0_4x4")] == [8, 4, 4]
    with pytest.raises(OracleError, match="not a repack layout"):
        oracle.layout_rows("q4_0")
    assert oracle.repack_generation("NEON = 1 | AARCH64_REPACK = 1 | ") == "aarch64"
    assert oracle.repack_generation("CPU : NEON = 1 | REPACK = 1 | ") == "repack"
    assert oracle.repack_generation("NEON = 1 | ") is None
    assert oracle.machine_arch("arm64") == oracle.machine_arch("aarch64") == "arm"
    with pytest.raises(OracleError, match="'riscv64' is neither ARM"):
        oracle.machine_arch("riscv64")


def test_the_oracle_imports_the_standard_library_only() -> None:
    tree = ast.parse((REPO / "src/llama_wheels/oracle.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported


def test_the_wheel_suite_finds_the_oracle_by_file_path_without_llama_wheels() -> None:
    """As cibuildwheel runs it: python without site-packages (no llama_wheels), from the checkout."""
    code = ("import sys; sys.path.insert(0, 'wheel_tests'); import wheel_probe; "
            "o, where = wheel_probe.standalone('oracle'); print(where); "
            "print(o.repack_layout('Q4_0', 8, code=frozenset({'dotprod'})))")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LLAMA_WHEELS_ORACLE_PY")}
    result = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(REPO / "src/llama_wheels/oracle.py"), "q4_0_4x4"]
    with_env = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, capture_output=True, text=True,
                              timeout=60, env={**env, "LLAMA_WHEELS_ORACLE_PY": str(REPO / "nowhere.py")})
    assert "LLAMA_WHEELS_ORACLE_PY=" in with_env.stderr and "is not a file" in with_env.stderr


def test_a_variants_march_comes_from_its_features_not_its_name() -> None:
    """ggml-cpu/CMakeLists.txt bumps armv8-a to the first level of each declared feature; the ISA audit allows
    what that -march allows (patch 0007's armv8.6_nosve has no upstream-style name)."""
    builds = oracle.declared_arm_builds(PINNED_CMAKE)
    assert [builds[v].march for v in ("armv8.0_1", "armv8.2_3", "armv8.6_nosve", "armv9.2_2")] == [
        "armv8-a", "armv8.2-a+dotprod+fp16+sve", "armv8.6-a+dotprod+fp16+i8mm",
        "armv9.2-a+dotprod+fp16+sve+i8mm+sve2+sme"]
    nosve = oracle.instruction_features(builds["armv8.6_nosve"].march)
    assert {"i8mm", "bf16", "dotprod", "fp16"} <= nosve and not nosve & {"sve", "sve2", "sme"}


def test_a_release_before_a_types_repack_branch_does_not_repack_it() -> None:
    """llama-cpp-python 0.3.35's repack.cpp has no Q1_0 branch (0.3.36's has): measured by `pin add 0.3.35`."""
    code = frozenset({"dotprod", "i8mm"})
    assert oracle.repack_layout("Q1_0", 64, code=code) == "q1_0_4x8"  # the pinned sources
    assert oracle.repack_layout("Q1_0", 64, code=code, version="0.3.36") == "q1_0_4x8"
    assert oracle.repack_layout("Q1_0", 64, code=code, version="0.3.35") is None
    assert oracle.repack_layout("Q4_0", 64, code=code, version="0.3.35") == "q4_0_4x8"
    assert oracle._release("0.3.36.dev1+g1") == (0, 3, 36) and oracle._release("0.3.4") < oracle._release("0.3.35")

