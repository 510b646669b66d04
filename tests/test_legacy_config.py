"""The legacy (0.3.4) pins and their patch series, checked without building anything."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llama_wheels import oracle
from llama_wheels.config import load
from llama_wheels.core.cache import Cache
from llama_wheels.plan import plan
from llama_wheels.stages.fetch import fetch_sdist
from llama_wheels.stages.patching import prepare

from .conftest import REPO, pinned

PATCH_DIR = REPO / "patches" / pinned("legacy").version


def test_unpatched_pin_is_the_legacy_pin_minus_the_fixes() -> None:
    config = load(REPO)
    legacy, unpatched = config.pin("legacy"), config.pin("legacy-unpatched")
    assert (unpatched.version, unpatched.sdist_sha256, unpatched.llama_cpp_commit) == (
        legacy.version, legacy.sdist_sha256, legacy.llama_cpp_commit)
    # the comparison must not differ in what it compiles with, only in the source it compiles
    common = set(unpatched.switches)
    assert {k: legacy.switches[k] for k in common} == dict(unpatched.switches)
    assert unpatched.patches == legacy.patches[:1] == ("0001-install-only-the-package.patch",)
    for target in ("linux-aarch64-armv8.2-dotprod", "linux-aarch64-armv8.0"):
        [a], [b] = plan(config, [target], "legacy"), plan(config, [target], "legacy-unpatched")
        assert a.cmake_args() == b.cmake_args()


def test_every_legacy_patch_is_listed_and_documented() -> None:
    config = load(REPO)
    listed = config.pin("legacy").patches
    assert sorted(p.name for p in PATCH_DIR.glob("*.patch")) == sorted(listed)
    text = (REPO / "build_config" / "pins.toml").read_text()
    for name in listed:
        # one comment above each entry in pins.toml, and the header parts the project asks for
        assert re.search(rf"#[^\n]*\n\s*\"{re.escape(name)}\"", text), f"{name} has no comment in pins.toml"
        header = (PATCH_DIR / name).read_text().split("\n---\n", 1)[0]
        for part in ("Problem:", "Fix:", "Upstream:", "Proved by:"):
            assert part in header, f"{name}: header lacks {part!r}"


def test_proving_tests_named_in_patch_headers_exist() -> None:
    tests = {p.relative_to(REPO).as_posix(): p.read_text() for p in
             [*REPO.glob("tests/*.py"), *REPO.glob("wheel_tests/*.py")]}
    for patch in PATCH_DIR.glob("*.patch"):
        header = patch.read_text().split("\n---\n", 1)[0]
        proved = header.split("Proved by:", 1)[1]
        for path, name in re.findall(r"((?:tests|wheel_tests)/\w+\.py)::(\w+)", " ".join(proved.split())):
            assert path in tests, f"{patch.name} names {path}, which does not exist"
            assert f"def {name}(" in tests[path], f"{patch.name} names {path}::{name}, which does not exist"


def test_upstream_references_are_stated_as_facts() -> None:
    headers = {p.name: p.read_text().split("\n---\n", 1)[0] for p in PATCH_DIR.glob("*.patch")}
    assert "PR #10961" in headers["0002-ggml-cpu-dotprod-hwcap-bit.patch"]
    assert "3327bb0f8" in headers["0002-ggml-cpu-dotprod-hwcap-bit.patch"]
    assert "PR #12004" in headers["0003-unused-tensors-stay-out-of-cpu-aarch64.patch"]
    assert "PR #14990" in headers["0004-use-extra-bufts.patch"]


@pytest.fixture(scope="module")
def prepared_legacy(cache: Cache) -> Path:
    config = load(REPO)
    pin = config.pin("legacy")
    return prepare(pin, fetch_sdist(pin, cache), config.patches_dir, cache).tree


@pytest.mark.network
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


@pytest.mark.network
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
