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
from llama_wheels.standalone import hostcpu
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
    # hwcaps as a Cortex-A72 reports them (armv8.0-a with crc and crypto, no lse), and an A76's (armv8.2-a)
    a72 = {name: name in {"aes", "sha2", "crc"} for name in hostcpu.HWCAPS}
    a76 = {**a72, "lse": True, "rdm": True, "rcpc": True, "fp16": True, "dotprod": True}
    assert backends.missing_features("armv8.2-a+dotprod", a72) == ["dotprod", "lse", "rdm"]
    assert backends.missing_features("armv8.2-a+dotprod", a76) == []
    assert backends.missing_features("armv8-a", a72) == []
    assert backends.missing_features("armv8.2-a+dotprod+nofp16", a72) == ["dotprod", "lse", "rdm"]
    # a bare level is judged by all it implies, as the oracle (and 0.3.36's patch 0002) judge it
    assert backends.missing_features("armv8.6-a", a76) == [
        "altnzcv", "bf16", "complxnum", "flagm", "frintts", "i8mm", "jsconv", "pauth", "rcpc-immo", "sb"]
    for isa in ("armv8.4-a", "armv8.6-a+nobf16", "armv9-a", "armv9-a+nosve", "armv9.2-a+sme", "armv8.2-a+sve2"):
        assert set(backends.isa_features(isa)) == oracle.instruction_features(isa) & set(hostcpu.HWCAPS), isa

