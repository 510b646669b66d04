"""Matrix and wheel-suite rules for 0.3.4 wheels (patched and stock), without running anything."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from llama_wheels.config.cpus import load_cpus
from llama_wheels.judges.matrix import Observed, WheelBuild, _observed, expect, score_mismatch, wheel_labels
from tests.support.checkout import REPO, pinned
from tests.support.probe import wheel_probe

_spec = importlib.util.spec_from_file_location("wheel_probe_copy", REPO / "wheel_tests" / "wheel_probe.py")


assert _spec and _spec.loader


_spec.loader.exec_module(wheel_probe)


@pytest.mark.parametrize(
    ("cpu", "supported", "layout"),
    [
        ("cortex-a53", False, None),
        ("cortex-a72", False, None),
        ("a64fx", False, None),  # SVE but no dotprod
        ("cortex-a76", True, "q4_0_4x4"),
        ("neoverse-n1", True, "q4_0_4x4"),
        ("max", True, "q4_0_4x4"),  # i8mm, but the library was compiled without it
        ("max-sve256", True, "q4_0_4x4"),
    ],
)
def test_patched_legacy_wheel_expectations(cpu: str, supported: bool, layout: str | None) -> None:
    """The patched wheel records -march in cpu-isa.txt: enough to derive every CPU's outcome."""
    wheel = WheelBuild(path=Path("w.whl"), version=pinned("legacy").version, fixed_isa="armv8.2-a+dotprod", variants=())
    e = expect(wheel, load_cpus(REPO)[cpu], {})
    assert (e.supported, e.q4_0_layout, e.variant) == (supported, layout, None)
    assert e.missing == (() if supported else ("dotprod",))


def test_stock_wheel_has_no_expectation() -> None:
    """Without cpu-isa.txt nothing says what the wheel was built for: run it and see (SIGILL on a53)."""
    wheel = WheelBuild(path=Path("w.whl"), version=pinned("legacy").version, fixed_isa=None, variants=())
    e = expect(wheel, load_cpus(REPO)["cortex-a53"], {})
    assert (e.supported, e.q4_0_layout) == (True, None)


def test_armv8_0_legacy_wheel_repacks_nothing() -> None:
    wheel = WheelBuild(path=Path("w.whl"), version=pinned("legacy").version, fixed_isa="armv8-a", variants=())
    for cpu in load_cpus(REPO).values():
        assert expect(wheel, cpu, {}).q4_0_layout == "none"


def test_wheels_sharing_a_file_name_get_distinct_labels() -> None:
    a, b, c = Path("/x/before/w.whl"), Path("/x/after/w.whl"), Path("/y/other.whl")
    assert wheel_labels([a, b, c]) == {a: "before/w.whl", b: "after/w.whl", c: "other.whl"}


def test_observed_reads_the_suites_result_format() -> None:
    """Regression: the matrix read models[name]["llama"]; conftest writes models[name]["probe"]["llama"]."""
    run = {"repacked": {"blk.0.attn_q.weight": "q4_0_4x4", "output.weight": "q4_0_4x4"}, "tokens": [5, 6]}
    k = {"repacked": {"blk.0.attn_q.weight": "q4_K_8x8", "output.weight": "q6_K_8x8"}, "tokens": [8]}
    result = {"models": {"q4_0": {"probe": {"llama": run}, "failure": None},
                         "f16": {"probe": {"llama": {"repacked": {}, "tokens": [7]}}, "failure": None},
                         "q4_k_m": {"probe": {"llama": k}, "failure": None},
                         "mxfp4": {"cannot_hold": "llama_cpp 0.3.4 knows no ggml type MXFP4"},
                         "q8_0": {"probe": None, "failure": "died with signal SIGILL", "signal": "SIGILL"},
                         "q6_k": {"probe": None, "failure": "exited with code 1", "signal": None}}}
    assert _observed(result) == Observed(layout="q4_0_4x4", repacked=4,
                                         layouts={"Q4_0": "q4_0_4x4", "Q4_K": "q4_K_8x8", "Q6_K": "q6_K_8x8"},
                                         tokens={"q4_0": [5, 6], "f16": [7], "q4_k_m": [8]},
                                         crashes=("q8_0 probe died of SIGILL",))
    assert _observed({"models": {}}) == Observed(layout=None, layouts={}, repacked=0, tokens={}, crashes=())


@pytest.mark.parametrize(
    ("ggml_type", "ne1", "expect", "generation", "machine", "layout"),
    [
        ("Q8_0", 64, "q4_0_4x4", "repack", "aarch64", "q8_0_4x4"),  # 0.3.36 repacks Q8_0 on ARM
        ("Q8_0", 64, "q4_0_8x8", "repack", "aarch64", "q8_0_4x8"),  # 8x8 means i8mm: Q8_0's i8mm layout
        ("Q8_0", 64, "q4_0_4x4", "aarch64", "aarch64", None),  # 0.3.4 never does
        ("Q8_0", 64, "q4_0_8x8", "repack", "x86_64", None),  # x86 never does
        ("Q4_0", 64, "q4_0_4x4", "aarch64", "aarch64", "q4_0_4x4"),
        ("Q4_0", 12, "q4_0_8x8", "aarch64", "arm64", "q4_0_4x8"),  # 8-row layout falls back to the i8mm 4-row one
        ("Q4_0", 12, "q4_0_8x8", "repack", "x86_64", None),  # x86 has no 4-row one
        ("Q4_0", 262, "q4_0_4x4", "aarch64", "aarch64", None),
        ("F16", 64, "q4_0_8x8", "repack", "aarch64", None),
    ],
)
def test_the_wheel_suite_derives_every_weight_from_the_q4_0_layout(
        ggml_type: str, ne1: int, expect: str, generation: str, machine: str, layout: str | None) -> None:
    assert wheel_probe.expected_repack(ggml_type, ne1, expect, generation, machine) == layout


def test_the_scores_a_wheel_reports_are_checked_against_the_oracles() -> None:
    """The IMPORT probe reads each variant library's own ggml_backend_score; they must be the oracle's."""
    wheel = WheelBuild(path=Path("w.whl"), version=pinned().version, fixed_isa=None,
                       variants=("armv8.0_1", "armv8.2_2"))
    variants = {"armv8.0_1": frozenset(), "armv8.2_2": frozenset({"dotprod", "fp16"})}
    e = expect(wheel, load_cpus(REPO)["neoverse-n1"], variants)
    assert score_mismatch({"armv8.0_1": 1, "armv8.2_2": 7}, e) == ""
    # A variant that runs although the oracle says it cannot, or one missing from the report: named.
    assert score_mismatch({"armv8.0_1": 1, "armv8.2_2": 0}, e) == (
        "variant scores differ from ggml's rule: armv8.2_2 0 (oracle 7)")
    assert score_mismatch({"armv8.0_1": 1}, e) == "variant scores differ from ggml's rule: armv8.2_2 absent (oracle 7)"
    # A fixed-ISA or unpatched wheel reports none and expects none.
    legacy = WheelBuild(path=Path("w.whl"), version=pinned("legacy").version, fixed_isa="armv8.2-a+dotprod",
                        variants=())
    assert score_mismatch({}, expect(legacy, load_cpus(REPO)["neoverse-n1"], {})) == ""

