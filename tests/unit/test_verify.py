"""The build's verify stage judges a smoke run with the oracle (issue 12 item 2): pure cases here; the real
wheel, sabotaged, in tests/integration/builds/test_build.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_wheels import oracle
from llama_wheels.config.cpus import load_cpus
from llama_wheels.core.errors import VerifyError
from llama_wheels.judges.matrix import expectation_for
from llama_wheels.judges.verify import SMOKE_MODEL, SmokeResult, judge
from llama_wheels.standalone.models import SPECS, weight_tensors
from tests.support.checkout import REPO
from tests.support.ggml import LINUX_ARM

N1 = load_cpus(REPO)["neoverse-n1"]


DISPATCH = oracle.Build(variants=tuple(LINUX_ARM))


MATMUL = [t.name for t in weight_tensors(SPECS[SMOKE_MODEL]) if t.is_matmul_weight]


def smoke(variant: str | None, repacked: dict[str, str], generation: str | None = "repack") -> SmokeResult:
    return SmokeResult(cpu=N1.name, tokens=(1,) * 8, variant=variant, repacked=repacked, generation=generation,
                       package=Path("llama_cpp/__init__.py"), seconds=1.0)


def test_the_expected_variant_and_every_weights_layout_pass() -> None:
    expectation = expectation_for(DISPATCH, N1, LINUX_ARM, label="w.whl")
    judge(smoke("armv8.2_2", dict.fromkeys(MATMUL, "q4_0_4x4")), expectation, label="w.whl")


@pytest.mark.parametrize(("variant", "repacked", "generation", "says"), [
    # What the default wheel without its armv8.2+ libraries does on neoverse-n1.
    ("armv8.0_1", {}, "repack", "loaded CPU variant armv8.0_1, expected armv8.2_2; Q4_0 repack none (0 tensors), "
                                "expected q4_0_4x4 (15 tensors)"),
    # The upstream bug: the right variant, nothing repacked (REPACK = 1 or not).
    ("armv8.2_2", {}, "repack", "Q4_0 repack none (0 tensors), expected q4_0_4x4 (15 tensors)"),
    ("armv8.2_2", {}, None, "built without repacking"),
    # One weight short, or a layout this CPU cannot have.
    ("armv8.2_2", dict.fromkeys(MATMUL[1:], "q4_0_4x4"), "repack", "q4_0_4x4 (14 tensors), expected q4_0_4x4 (15"),
    ("armv8.2_2", dict.fromkeys(MATMUL, "q4_0_4x8"), "repack", "Q4_0 repack q4_0_4x8 (15 tensors), expected q4_0_4x4"),
])
def test_anything_else_fails_naming_expected_and_observed(variant: str, repacked: dict[str, str],
                                                          generation: str | None, says: str) -> None:
    expectation = expectation_for(DISPATCH, N1, LINUX_ARM, label="w.whl")
    with pytest.raises(VerifyError) as exc:
        judge(smoke(variant, repacked, generation), expectation, label="w.whl")
    assert says in str(exc.value) and str(exc.value).startswith("w.whl on neoverse-n1: ")
    assert "\n" not in str(exc.value)


def test_a_fixed_isa_wheel_is_judged_by_its_isa() -> None:
    fixed = expectation_for(oracle.Build(fixed_isa="armv8.2-a+dotprod"), N1, {}, label="w.whl")
    judge(smoke(None, dict.fromkeys(MATMUL, "q4_0_4x4")), fixed, label="w.whl")
    armv8 = expectation_for(oracle.Build(fixed_isa="armv8-a"), N1, {}, label="w.whl")
    judge(smoke(None, {}), armv8, label="w.whl")
    with pytest.raises(VerifyError, match="expected none"):
        judge(smoke(None, dict.fromkeys(MATMUL, "q4_0_4x4")), armv8, label="w.whl")


def test_a_wheel_that_records_nothing_cannot_pass() -> None:
    unknown = expectation_for(oracle.Build(), N1, {}, label="w.whl")
    with pytest.raises(VerifyError, match=r"neither CPU variants nor cpu-isa\.txt"):
        judge(smoke("armv8.2_2", dict.fromkeys(MATMUL, "q4_0_4x4")), unknown, label="w.whl")


def test_a_wheel_that_ran_where_it_cannot_fails() -> None:
    refused = expectation_for(oracle.Build(fixed_isa="armv8.6-a"), N1, {}, label="w.whl")
    with pytest.raises(VerifyError, match=r"lacks bf16, i8mm\), yet it did"):
        judge(smoke(None, {}), refused, label="w.whl")

