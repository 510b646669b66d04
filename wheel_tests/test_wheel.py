"""Prove an installed llama-cpp-python wheel: it loads, repacks every type as expected, and repacking is sound.

Each model is generated at session scope and probed once (see conftest.py); the tests below judge the
probe's JSON. Phases of a probe: ``llama`` (``Llama(...)`` as users call it), ``extra_bufts_on`` /
``extra_bufts_off`` (ctypes API with ``llama_model_params.use_extra_bufts`` True / False: the repack on/off
switch) and, when ``Llama()`` accepts it, ``llama_extra_bufts_off``.
"""

from __future__ import annotations

import math
import platform
from typing import Any

import pytest
import wheel_probe

MODELS = wheel_probe.standalone("models")[0]
SPECS = tuple(MODELS.SPECS)
Q4_0_SPECS = tuple(name for name, spec in MODELS.SPECS.items() if spec.weight_type == "Q4_0")

# Repack on vs off, first-token logits: max |on - off| must stay within this fraction of the off logits'
# range (max - min). Both paths quantize activations the same way (Q8_0; Q8_K for the K-quants) and sum exact
# int8 block products, but the repacked kernels scale and accumulate blocks in another order, so the results
# need not be bit-identical, and a last-bit difference can move the next layer's activation quantization by
# one step, which the layers after it carry on. Measured under qemu (llama-cpp-python 0.3.36, patched): Q4_0,
# Q8_0, Q4_K_M, Q5_K_M, Q6_K, Q1_0 and MXFP4 differ by at most 1.7e-7 of the range on cortex-a76, max,
# max,sve128 and max,sve256; IQ4_NL by 3.9e-3 on cortex-a76 and max (0 with sve256), greedy tokens identical
# everywhere. The bound leaves that a factor of 2.5 and still catches a wrong interleave, which scrambles rows
# and moves logits by a sizeable part of their range (the SVE-512 K-quant defect of patch 0006 changed tokens).
LOGIT_REL_TOL = 1e-2


def _machine() -> str:
    return platform.machine()


def _weights(models_module: Any, model_files: dict[str, Any], name: str) -> dict[str, Any]:
    """The model's tensors with the types its file holds (a quantized model's are the quantizer's choice)."""
    return {t.name: t for t in models_module.file_tensors(models_module.SPECS[name], model_files[name])}


def _rel_diff(a: list[float], b: list[float]) -> float:
    span = max(b) - min(b)
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) / span


def test_import_and_system_info(facts: dict[str, Any]) -> None:
    import llama_cpp

    info = wheel_probe.system_info()
    facts["llama_cpp_version"] = getattr(llama_cpp, "__version__", "unknown")
    facts["system_info"] = info
    facts["llama_accepts_use_extra_bufts"] = wheel_probe.llama_accepts_use_extra_bufts()
    facts["repack_generation"] = wheel_probe.oracle().repack_generation(info)
    # 0.3.36 says REPACK = 1; 0.3.4 (GGML_CPU_AARCH64) says AARCH64_REPACK = 1.
    assert facts["repack_generation"], f"system info lacks 'REPACK = 1' / 'AARCH64_REPACK = 1': {info!r}"


@pytest.mark.parametrize("name", SPECS)
def test_model_loads_and_generates(probe: Any, models_module: Any, name: str) -> None:
    result = probe(name).require("llama")
    run = result["llama"]
    n_vocab = models_module.SPECS[name].n_vocab
    assert len(run["logits"]) == n_vocab
    assert all(math.isfinite(x) for x in run["logits"]), "non-finite logits"
    assert max(run["logits"]) - min(run["logits"]) > 0.1, "logits are (nearly) constant: degenerate model"
    assert len(run["tokens"]) == wheel_probe.N_GEN
    assert all(0 <= t < n_vocab for t in run["tokens"]), run["tokens"]


@pytest.mark.parametrize("name", SPECS)
def test_repack_placement(probe: Any, models_module: Any, model_files: dict[str, Any], name: str) -> None:
    """Rules valid on every CPU, then the exact layout of every tensor this CPU must get."""
    result = probe(name).require("llama")
    repacked: dict[str, str] = result["llama"]["repacked"]
    weights = _weights(models_module, model_files, name)
    generation = wheel_probe.oracle().repack_generation(result["system_info"]) or "repack"
    version = result["llama_cpp_version"]  # a release may predate a type's repack branch (oracle.REPACKED_SINCE)

    unknown = sorted(set(repacked) - set(weights))
    assert not unknown, f"repacked tensors not in the model: {unknown}"
    for tname, layout in repacked.items():
        t = weights[tname]
        assert t.is_matmul_weight, f"{tname} ({t.ggml_type}, {t.ne1} rows) is no MUL_MAT weight, yet repacked"
        assert layout.lower().startswith(t.ggml_type.lower() + "_"), f"{tname} ({t.ggml_type}) repacked as {layout}"
        assert t.ne1 % wheel_probe.oracle().layout_rows(layout) == 0, f"{tname}: {t.ne1} rows cannot be {layout}"
    # Whatever this CPU offers, ggml's rules (the oracle) allow each weight only some layouts: none for F16,
    # for a type or a row count no layout takes, or for what the wheel's repack generation cannot do.
    possible = {
        n: {wheel_probe.expected_repack(t.ggml_type, t.ne1, q4_0, generation, version=version)
            for q4_0 in wheel_probe.q4_0_layouts()}
        for n, t in weights.items()
        if t.is_matmul_weight
    }
    for tname, layout in repacked.items():
        assert layout in possible[tname], f"{tname}: {layout} is not one ggml's rules allow ({possible[tname]})"
    for ggml_type in {weights[tname].ggml_type for tname in repacked}:
        eight = {layout for tname, layout in repacked.items()
                 if weights[tname].ne1 % 8 == 0 and weights[tname].ggml_type == ggml_type}
        assert len(eight) <= 1, f"one CPU chose several {ggml_type} layouts for the same shapes: {sorted(eight)}"

    expect = wheel_probe.expect_layout()
    predicted = {
        n: wheel_probe.expected_repack(t.ggml_type, t.ne1, expect, generation, version=version)
        for n, t in weights.items()
        if t.is_matmul_weight
    }
    wanted = {n: layout for n, layout in predicted.items() if layout is not None}
    wrong = {n: f"{repacked.get(n, 'none')} (wanted {wanted.get(n, 'none')}; {weights[n].ggml_type}, "
                f"{weights[n].ne1} rows)"
             for n in sorted(set(repacked) | set(wanted)) if repacked.get(n) != wanted.get(n)}
    assert not wrong, f"Q4_0 layout {expect} on this CPU, yet: {wrong}"


@pytest.mark.parametrize("name", SPECS)
def test_repack_on_off_agree(probe: Any, name: str) -> None:
    """use_extra_bufts=False stops repacking; on vs off: logits within LOGIT_REL_TOL, same tokens."""
    if not probe(name).require("llama")["model_params_has_use_extra_bufts"]:
        assert not wheel_probe.promises_use_extra_bufts(), "its provenance lists the use_extra_bufts patch"
        pytest.skip(
            "llama_model_params has no use_extra_bufts (added in llama.cpp PR #14990, July 2025; a stock "
            "0.3.4 wheel): repacking cannot be switched off at run time, so there is nothing to compare"
        )
    result = probe(name).require("extra_bufts_on", "extra_bufts_off", "llama")
    on, off, llama = result["extra_bufts_on"], result["extra_bufts_off"], result["llama"]
    assert off["repacked"] == {}, f"use_extra_bufts=False still repacked {off['repacked']}"
    assert on["repacked"] == llama["repacked"], "ctypes load and Llama() repacked differently"
    assert on["tokens"] == llama["tokens"], "ctypes API and Llama() generated different tokens"
    if not on["repacked"]:
        assert on["logits"] == off["logits"], "nothing was repacked, yet use_extra_bufts changed the logits"
    else:
        rel = _rel_diff(on["logits"], off["logits"])
        assert rel <= LOGIT_REL_TOL, f"repack on/off logits differ by {rel:.3g} of their range"
    assert on["tokens"] == off["tokens"], f"greedy tokens: on {on['tokens']}, off {off['tokens']}"


@pytest.mark.parametrize("name", Q4_0_SPECS)
def test_llama_use_extra_bufts_false(probe: Any, name: str) -> None:
    """``Llama(..., use_extra_bufts=False)`` (patched wheels only) really stops repacking."""
    import llama_cpp

    if not wheel_probe.llama_accepts_use_extra_bufts():
        assert not wheel_probe.promises_use_extra_bufts(), "its provenance lists the use_extra_bufts patch"
        pytest.skip(
            f"llama_cpp {getattr(llama_cpp, '__version__', '?')}: Llama.__init__ has no use_extra_bufts "
            "parameter (stock 0.3.36 swallows unknown kwargs), so Llama() cannot switch repacking off"
        )
    result = probe(name).require("llama", "llama_extra_bufts_off")
    off = result["llama_extra_bufts_off"]
    assert off["repacked"] == {}, f"Llama(use_extra_bufts=False) still repacked {off['repacked']}"
    assert off["tokens"] == result["llama"]["tokens"]


def test_expect_layout_is_observed(probe: Any) -> None:
    """The plain Q4_0 model shows the layout this CPU must get (guards against a vacuous pass): given by
    LLAMA_WHEELS_EXPECT_LAYOUT, or derived here from the CPU and the wheel's provenance record."""
    expect = wheel_probe.expect_layout()
    layouts = set(probe("q4_0").require("llama")["llama"]["repacked"].values())
    assert layouts == (set() if expect == "none" else {expect}), f"expected {expect}"


def test_expected_cpu_variant_is_loaded(facts: dict[str, Any]) -> None:
    """A runtime-dispatch wheel loads the CPU variant the oracle derives for this CPU from the wheel's record
    (and LLAMA_WHEELS_EXPECT_VARIANT, where CI knows its runner: apple_m1 on macos-14); a fixed-ISA wheel none."""
    expect = wheel_probe.expect_variant()
    facts["cpu_variant"] = loaded = wheel_probe.loaded_variant() if expect is not None else None
    assert loaded == expect, f"ggml loaded CPU variant {loaded}, expected {expect}"
