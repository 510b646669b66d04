"""``llama-wheels audit`` on real wheels: the default wheel is clean; a variant library or a core library with
code beyond its ISA fails, naming the library, the instruction and its offset; bad input exits 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from llama_wheels import oracle
from llama_wheels.binaries.audit import audit_wheel
from llama_wheels.config.platforms import platform
from llama_wheels.core.errors import VerifyError
from tests.support.checkout import cli
from tests.support.ggml import PINNED_CMAKE
from tests.support.zig import wheel_of, zig_env

LIB = "llama_cpp/lib"


def test_not_a_wheel_is_bad_input(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.whl"
    bogus.write_text("not a zip")
    result = cli("audit", str(bogus))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert "notes.whl" in line and "not a wheel file name" in line


def test_a_macos_core_library_beyond_the_apple_baseline_fails(tmp_path: Path) -> None:
    """Mach-O: libggml-base.dylib may use the Apple M1 baseline (armv8.4-a+fp16: sdot, fp16, lse), not i8mm."""
    def wheel_with(lines: list[str], out: Path) -> Path:
        source = tmp_path / f"{out.name}.s"
        source.write_text(".text\n.globl _f\n_f:\n" + "".join(f"  {x}\n" for x in lines) + "  ret\n")
        dylib = tmp_path / f"{out.name}.dylib"
        subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-macos.11.0", "-mcpu=apple_m2",
                        "-shared", "-o", str(dylib), str(source)], check=True, capture_output=True, env=zig_env(),
                       timeout=600)
        out.mkdir()
        return wheel_of(out, {f"{LIB}/libggml-base.dylib": dylib})

    base = ["sdot v0.4s, v1.16b, v2.16b", "fadd h0, h1, h2", "ldadd w0, w1, [x2]", "ldapr w0, [x1]"]
    ok = wheel_with(base, tmp_path / "ok")
    result = cli("audit", str(ok))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "libggml-base.dylib [baseline armv8.4-a+fp16]: ok; uses dotprod 1, fp16 1, lse 1, rcpc 1" in result.stdout
    bad = wheel_with([*base, "smmla v0.4s, v1.16b, v2.16b"], tmp_path / "bad")
    result = cli("audit", str(bad))
    assert result.returncode == 1
    assert re.search(r"libggml-base\.dylib: 1 need i8mm, e\.g\. `smmla v0\.4s, v1\.16b, v2\.16b` at 0x[0-9a-f]+ "
                     r"\(__TEXT,__text, file offset 0x[0-9a-f]+\)", result.stderr), result.stderr


# ggml's SVE and i8mm kernels are compiled wherever the ACLE macros say the -march has them.
KERNELS = """#include <arm_neon.h>
#include <stdint.h>
#if defined(__ARM_FEATURE_SVE)
#include <arm_sve.h>
uint64_t vector_bytes(void) { return svcntb(); }
#else
uint64_t vector_bytes(void) { return 16; }
#endif
#if defined(__ARM_FEATURE_MATMUL_INT8)
int32x4_t mmla(int32x4_t acc, int8x16_t a, int8x16_t b) { return vmmlaq_s32(acc, a, b); }
#endif
"""


APPLE_TOKENS = {name: tokens for name, (tokens, _) in oracle.declared_cmake_variants(PINNED_CMAKE).items()
                if name.startswith("apple_")}


def apple_variant_wheel(tmp_path: Path, variant: str, compiler_args: list[str]) -> Path:
    """A wheel whose llama_cpp/lib/libggml-cpu-<variant>.so is ``KERNELS`` compiled with ``compiler_args``."""
    tmp_path.mkdir()
    source = tmp_path / "kernels.c"
    source.write_text(KERNELS)
    library = tmp_path / f"libggml-cpu-{variant}.so"
    subprocess.run([*compiler_args, "-O2", "-g0", "-dynamiclib", "-o", str(library), str(source)], check=True,
                   capture_output=True, env=zig_env(), timeout=600)
    out = tmp_path / "wheel"
    out.mkdir()
    return wheel_of(out, {f"{LIB}/libggml-cpu-{variant}.so": library})


def zigcc(variant: str) -> list[str]:
    """The compiler as the macOS build runs it for ``variant``: zigcc with ggml's -march for it."""
    march = oracle.variant_march(variant, APPLE_TOKENS[variant])
    return [sys.executable, "-m", "llama_wheels.stages.zigcc", "cc", "aarch64-macos.11.0", f"-march={march}"]


def test_apple_m4_has_no_sve_and_the_audit_holds_it_to_nosve(tmp_path: Path) -> None:
    """ggml's apple_m4 is -march=armv9.2-a+dotprod+i8mm+nosve+sme (an M4 has SME, no SVE). Through zigcc its code
    has no SVE and passes; compiled with zig's literal -mcpu (v9_2a ... -sve, which zig's v9 level turns back on,
    so __ARM_FEATURE_SVE is defined and SVE code is compiled in) it fails on `rdvl` (SVE outside streaming mode)."""
    builds = oracle.declared_arm_builds(PINNED_CMAKE, "Darwin")
    baseline = str(platform("macos-arm64").isa_baseline)
    ok = audit_wheel(apple_variant_wheel(tmp_path / "ok", "apple_m4", zigcc("apple_m4")), baseline=baseline,
                     variants=builds)
    [library] = ok.libraries
    assert library.rule == "variant apple_m4" and not library.violations
    assert dict(library.features).get("i8mm", 0) > 0 and "sve" not in dict(library.features)
    literal = [sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-macos.11.0",
               "-mcpu=generic+v9_2a+dotprod+i8mm-sve+sme"]
    bad = audit_wheel(apple_variant_wheel(tmp_path / "bad", "apple_m4", literal), baseline=baseline, variants=builds)
    with pytest.raises(VerifyError, match=r"libggml-cpu-apple_m4\.so: \d+ need sve, e\.g\. `rdvl "):
        bad.check()


def test_an_apple_variant_held_to_fewer_features_fails(tmp_path: Path) -> None:
    """apple_m2_m3's i8mm code passes as apple_m2_m3 (DOTPROD MATMUL_INT8) and fails when the variant is
    declared without MATMUL_INT8; apple_m1's (dotprod only) has no i8mm at all."""
    builds = oracle.declared_arm_builds(PINNED_CMAKE, "Darwin")
    baseline = str(platform("macos-arm64").isa_baseline)
    wheel = apple_variant_wheel(tmp_path / "m2", "apple_m2_m3", zigcc("apple_m2_m3"))
    audit_wheel(wheel, baseline=baseline, variants=builds).check()
    fewer = {**builds, "apple_m2_m3": oracle.variant_build(
        "apple_m2_m3", [t for t in APPLE_TOKENS["apple_m2_m3"] if t != "MATMUL_INT8"])}
    with pytest.raises(VerifyError, match=r"libggml-cpu-apple_m2_m3\.so: \d+ need i8mm, e\.g\. `smmla "):
        audit_wheel(wheel, baseline=baseline, variants=fewer).check()
    m1 = audit_wheel(apple_variant_wheel(tmp_path / "m1", "apple_m1", zigcc("apple_m1")), baseline=baseline,
                     variants=builds)
    assert not m1.violations and not {"i8mm", "sme", "sve"} & set(dict(m1.libraries[0].features))

