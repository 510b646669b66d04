"""The expectations of the emulated matrix, derived from CPU features and the pinned source."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llama_wheels import oracle
from llama_wheels.config import load
from llama_wheels.config.cpus import load_cpus
from llama_wheels.core.cache import Cache
from llama_wheels.judges.isa_audit import ggml_cmake
from llama_wheels.judges.matrix import WheelBuild, expect
from llama_wheels.plan import plan
from llama_wheels.stages.fetch import fetch_sdist
from llama_wheels.stages.patching import prepare
from tests.support.checkout import REPO, pinned
from tests.support.ggml import PINNED_CMAKE


@pytest.fixture(scope="module")
def source_tree(cache: Cache) -> Path:
    config = load(REPO)
    pin = config.pin("current")
    return prepare(pin, fetch_sdist(pin, cache), config.patches_dir, cache).tree


@pytest.fixture(scope="module")
def variants(source_tree: Path) -> dict[str, frozenset[str]]:
    return oracle.declared_arm_variants(ggml_cmake(source_tree))


def test_pinned_source_declares_the_arm_variants(variants: dict[str, frozenset[str]]) -> None:
    assert variants["armv8.0_1"] == frozenset()
    assert variants["armv8.2_2"] == {"dotprod", "fp16"}
    assert variants["armv9.2_2"] == {"dotprod", "fp16", "sve", "i8mm", "sve2", "sme"}
    assert variants["armv8.6_nosve"] == {"dotprod", "fp16", "i8mm"}  # patch 0007
    assert len(variants) == 9
    assert not any(name.startswith("android") for name in variants)
    # The fast tier's copy of the declarations (tests/unit/test_oracle.py) is the pin's.
    assert variants == oracle.declared_arm_variants(PINNED_CMAKE)


_FEATURE_MACRO = {"DOTPROD": "dotprod", "FP16_VECTOR_ARITHMETIC": "fp16", "SVE": "sve", "MATMUL_INT8": "i8mm",
                  "SVE2": "sve2", "SME": "sme"}


def test_the_oracles_scores_are_the_patched_sources(source_tree: Path) -> None:
    """cpu-feats.cpp as the series leaves it: each feature's weight (``1<<k``), and at 128-bit SVE
    (``af.sve_cnt == 16 ? A : 1<<k``, patch 0009) the weight the oracle gives SVE and SVE2 there."""
    text = (source_tree / "vendor/llama.cpp/ggml/src/ggml-cpu/arch/arm/cpu-feats.cpp").read_text()
    wide, narrow = {}, {}
    for macro, expr in re.findall(r"#ifdef GGML_USE_(\w+)\n(?:.*\n)*?\s*score \+= ([^;]+);", text):
        found = re.fullmatch(r"(?:af\.sve_cnt == (\d+) \? (-?\d+) : )?1<<(\d+)", expr.strip())
        assert found, f"cpu-feats.cpp: score += {expr}: not a weight the oracle knows how to read"
        bytes_, at_width, shift = found.groups()
        wide[_FEATURE_MACRO[macro]] = 1 << int(shift)
        if bytes_ is not None:
            assert int(bytes_) * 8 == oracle.SVE_NEON_WIDTH_BITS
            narrow[_FEATURE_MACRO[macro]] = int(at_width)
    assert wide == dict(oracle.SCORE_WEIGHTS)
    assert narrow == dict(oracle.SVE_AT_NEON_WIDTH) == {"sve": -2, "sve2": 1}


def test_pinned_source_declares_the_apple_variants(source_tree: Path) -> None:
    """macOS (``elseif (APPLE)``): three variants, with the features and -march ggml-cpu/CMakeLists.txt gives."""
    cmake = ggml_cmake(source_tree)
    builds = oracle.declared_arm_builds(cmake, "Darwin")
    assert {name: (build.features, build.march) for name, build in builds.items()} == {
        "apple_m1": ({"dotprod"}, "armv8.2-a+dotprod"),
        "apple_m2_m3": ({"dotprod", "i8mm"}, "armv8.6-a+dotprod+i8mm"),
        "apple_m4": ({"dotprod", "i8mm", "sme"}, "armv9.2-a+dotprod+i8mm+nosve+sme"),
    }
    # The fast tier's copy of the declarations (tests/unit/test_oracle.py) is the pin's.
    assert oracle.declared_arm_variants(cmake, "Darwin") == oracle.declared_arm_variants(PINNED_CMAKE, "Darwin")


def dispatch_wheel(variants: dict[str, frozenset[str]]) -> WheelBuild:
    return WheelBuild(path=Path("w.whl"), version=pinned().version, fixed_isa=None, variants=tuple(variants))


@pytest.mark.parametrize(
    ("cpu", "variant", "layout"),
    [
        ("cortex-a53", "armv8.0_1", "none"),
        ("cortex-a72", "armv8.0_1", "none"),
        ("a64fx", "armv8.0_1", "none"),  # SVE-512 but no dotprod: every other variant needs it
        ("cortex-a76", "armv8.2_2", "q4_0_4x4"),
        ("neoverse-n1", "armv8.2_2", "q4_0_4x4"),
        ("neoverse-v1", "armv8.6_1", "q4_0_8x8"),  # 256-bit SVE: scored as upstream
        ("neoverse-n2", "armv8.6_nosve", "q4_0_4x8"),  # 128-bit SVE: the NEON sibling (patch 0009)
        ("cortex-a710", "armv8.6_nosve", "q4_0_4x8"),
        ("max", "armv9.2_2", "q4_0_4x8"),  # i8mm, but 512-bit SVE: the 8x8 SVE kernel needs 256
        ("max-sve256", "armv9.2_2", "q4_0_8x8"),
    ],
)
def test_dispatch_expectations_follow_from_features(
    variants: dict[str, frozenset[str]], cpu: str, variant: str, layout: str
) -> None:
    cpus = load_cpus(REPO)
    expectation = expect(dispatch_wheel(variants), cpus[cpu], variants)
    assert (expectation.supported, expectation.variant, expectation.q4_0_layout) == (True, variant, layout)


def test_fixed_isa_targets_compile_exactly_the_variant_they_name(source_tree: Path) -> None:
    """A target's ``variant`` (the exact-ISA wheel the dispatch benchmark compares with) is only true if
    it compiles that variant's features, no more and no fewer, as the pinned ggml declares them."""
    config = load(REPO)
    declared = {name: frozenset(tokens)
                for name, (tokens, _) in oracle.declared_cmake_variants(ggml_cmake(source_tree)).items()}
    assert declared["zen4"] == {"SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI",
                                "AVX512_VNNI", "AVX512_BF16"}
    feature_names = frozenset().union(*declared.values())
    checked = []
    for target in (t for t in config.targets.values() if t.variant):
        [job] = plan(config, [target.name])
        assert target.variant in declared, f"{target.name}: ggml declares no CPU variant {target.variant!r}"
        if "arm_arch" in target.switches:
            isa = str(target.switches["arm_arch"])
            level = isa.split("+")[0].removesuffix("-a")  # armv8-a -> armv8.0, armv8.2-a -> armv8.2 ("armv8.2_1")
            assert target.variant.split("_")[0] == (level if "." in level else f"{level}.0"), target.name
            assert oracle.isa_features(isa) == oracle.cmake_features(target.variant, declared[target.variant]), \
                target.name
        else:
            compiled = {name.removeprefix("GGML_") for name, value in job.defines
                        if value == "ON" and name.removeprefix("GGML_") in feature_names}
            assert compiled == declared[target.variant], target.name
        checked.append(target.name)
    assert {"linux-x86_64-haswell", "linux-x86_64-zen4", "linux-aarch64-armv8.2-dotprod"} <= set(checked)

