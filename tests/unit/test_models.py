"""The tiny test models: every spec writes, and a file's tensors are read back as it holds them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from llama_wheels import oracle
from llama_wheels.standalone import models


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: models.write_model(spec, root / f"{name}.gguf") for name, spec in models.SPECS.items()}


def test_every_type_the_arm_repack_takes_has_a_model() -> None:
    """gguf-py writes Q4_0, Q8_0 and MXFP4; the quantizer makes the K-quant mixes, IQ4_NL and Q1_0. Every type
    with an ARM rule in the oracle has a model whose main type it is (a file type Q4_K_M is mostly Q4_K)."""
    main_types = {s.weight_type for s in models.SPECS.values() if s.quantize is None}
    main_types |= {s.quantize.removesuffix("_M").removesuffix("_S") for s in models.SPECS.values() if s.quantize}
    arm = {t for t, rules in oracle.REPACK_RULES.items() if any(r.arch == "arm" for r in rules)}
    assert arm <= main_types, f"no test model for {sorted(arm - main_types)}"


@pytest.mark.parametrize("name", sorted(models.SPECS))
def test_a_written_file_holds_the_spec(written: dict[str, Path], name: str) -> None:
    spec = models.SPECS[name]
    held = models.file_tensors(spec, written[name])
    assert [(t.name, t.ne0, t.ne1, t.is_matmul_weight) for t in held] == [
        (t.name, t.ne0, t.ne1, t.is_matmul_weight) for t in models.weight_tensors(spec)]
    # A quantized spec's file here is its F32 source; the quantizer (wheel_tests/) picks the types later.
    assert {t.ggml_type for t in held if t.ne1 > 1} == {spec.weight_type}


def test_the_shapes_reach_the_edges_of_every_interleave() -> None:
    """Per model: rows a multiple of 8 (every layout), of 4 only (4-row layouts), of neither (no layout)."""
    for name in ("q4_0-odd-rows", "mxfp4", "iq4_nl"):
        rows = {t.ne1 for t in models.weight_tensors(models.SPECS[name]) if t.is_matmul_weight}
        assert any(r % 8 == 0 for r in rows) and any(r % 4 == 0 and r % 8 for r in rows), name
        assert any(r % 4 for r in rows), name
    for name in ("q4_k_m", "q5_k_m"):  # K-quant layouts all take 8 rows; the 268-row output takes none
        rows = {t.ne1 for t in models.weight_tensors(models.SPECS[name]) if t.is_matmul_weight}
        assert any(r % 8 == 0 for r in rows) and any(r % 8 for r in rows), name
    # A row that is no whole number of 256-wide K-quant super-blocks: the quantizer must choose another type.
    assert any(t.ne0 % 256 for t in models.weight_tensors(models.SPECS["q6_k"]) if t.is_matmul_weight)


def test_a_file_of_another_model_is_refused(written: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"q4_0-odd-rows.gguf: token_embd.weight has shape \[96, 262\], model q4_0 "):
        models.file_tensors(models.SPECS["q4_0"], written["q4_0-odd-rows"])
    with pytest.raises(ValueError, match=r"no tensor output.weight, which model q4_0-output has"):
        models.file_tensors(models.SPECS["q4_0-output"], written["q4_0"])
    with pytest.raises(ValueError, match=r"tensors model q4_0 does not have: output.weight"):
        models.file_tensors(models.SPECS["q4_0"], written["q4_0-output"])


def test_a_quantized_spec_must_start_from_f32() -> None:
    with pytest.raises(ValueError, match=r"q4_k_m: the quantizer's source must be F32, not Q4_0"):
        replace(models.SPECS["q4_k_m"], weight_type="Q4_0")
    with pytest.raises(ValueError, match=r"must be multiples of 32 for IQ4_NL"):
        replace(models.SPECS["iq4_nl"], n_embd=80, n_head=8)


def test_layout_names_say_their_type() -> None:
    assert [oracle.layout_type(x) for x in ("q4_0_4x8", "q4_K_8x4", "iq4_nl_4x4", "mxfp4_4x4")] == [
        "Q4_0", "Q4_K", "IQ4_NL", "MXFP4"]
    with pytest.raises(oracle.OracleError, match="not a repack layout: 'q4_K'"):
        oracle.layout_type("q4_K")

