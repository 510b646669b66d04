"""The legacy (0.3.4) pins and their patch series, checked without building anything."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llama_wheels import oracle
from llama_wheels.config import load
from llama_wheels.core.cache import Cache
from llama_wheels.stages.fetch import fetch_sdist
from llama_wheels.stages.patching import prepare
from tests.support.checkout import REPO


@pytest.fixture(scope="module")
def prepared_legacy(cache: Cache) -> Path:
    config = load(REPO)
    pin = config.pin("legacy")
    return prepare(pin, fetch_sdist(pin, cache), config.patches_dir, cache).tree


def test_series_applies_and_fixes_what_it_says(prepared_legacy: Path) -> None:
    ggml_cpu = (prepared_legacy / "vendor/llama.cpp/ggml/src/ggml-cpu/ggml-cpu.c").read_text()
    assert "hwcap && HWCAP_ASIMDDP" not in ggml_cpu and "hwcap & HWCAP_ASIMDDP" in ggml_cpu
    llama_h = (prepared_legacy / "vendor/llama.cpp/include/llama.h").read_text()
    assert "bool use_extra_bufts;" in llama_h
    ctypes_layer = (prepared_legacy / "llama_cpp/llama_cpp.py").read_text()
    assert '("use_extra_bufts", ctypes.c_bool)' in ctypes_layer
    # the ctypes field order must be the C struct's: use_extra_bufts last in both
    c_struct = llama_h.split("struct llama_model_params {")[1].split("};")[0]
    c_fields = re.findall(r"^\s+bool (\w+);", c_struct, re.M)
    fields = ctypes_layer.split("class llama_model_params")[1].split("_fields_ = [")[1].split("]\n")[0]
    py_fields = re.findall(r'\("(\w+)", ctypes\.c_bool\)', fields)
    assert c_fields == py_fields
    assert (prepared_legacy / "llama_cpp/_backends.py").is_file()
    assert "cpu-isa.txt" in (prepared_legacy / "CMakeLists.txt").read_text()


def test_import_check_names_the_missing_feature(prepared_legacy: Path) -> None:
    """The package-side check of patch 0005, run here on x86 with hwcaps supplied by hand."""
    import importlib.util

    path = prepared_legacy / "llama_cpp/_backends.py"
    spec = importlib.util.spec_from_file_location("legacy_backends", path)
    assert spec and spec.loader
    backends = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(backends)
    no_dotprod = {"dotprod": False, "fp16": False, "i8mm": False, "sve": False, "sve2": False, "sme": False}
    assert backends.missing_features("armv8.2-a+dotprod", no_dotprod) == ["dotprod"]
    assert backends.missing_features("armv8.2-a+dotprod", {**no_dotprod, "dotprod": True}) == []
    assert backends.missing_features("armv8-a", no_dotprod) == []
    assert backends.missing_features("armv8.2-a+dotprod+nofp16", no_dotprod) == ["dotprod"]
    # a bare level is judged by what it implies, as the oracle (and 0.3.36's patch 0002) judge it
    assert backends.missing_features("armv8.6-a", {**no_dotprod, "dotprod": True}) == ["bf16", "i8mm"]
    for isa in ("armv8.4-a", "armv8.6-a+nobf16", "armv9-a", "armv9-a+nosve", "armv9.2-a+sme", "armv8.2-a+sve2"):
        assert set(backends.isa_features(isa)) == oracle.isa_features(isa), isa

