"""``llama-wheels audit`` on real wheels: the default wheel is clean; a variant library or a core library with
code beyond its ISA fails, naming the library, the instruction and its offset; bad input exits 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from llama_wheels import oracle
from llama_wheels.binaries.audit import audit_wheel
from llama_wheels.config import load
from llama_wheels.config.platforms import platform
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import VerifyError
from llama_wheels.oracle import instruction_features
from llama_wheels.testbed.audit import IsaAuditor, pinned_variants

from .conftest import REPO, cli
from .test_isa import zig_env
from .test_macos import wheel_of
from .test_oracle import PINNED_CMAKE

LIB = "llama_cpp/lib"


def rewritten(wheel: Path, out: Path, replace: dict[str, str] | None = None,
              rename: dict[str, str] | None = None) -> Path:
    """A copy of ``wheel`` whose member ``replace`` keys hold the bytes of the values (names in ``LIB``)."""
    out.mkdir(parents=True, exist_ok=True)
    copy = out / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(copy, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            name = info.filename.removeprefix(f"{LIB}/")
            data = src.read(f"{LIB}/{(replace or {})[name]}" if name in (replace or {}) else info.filename)
            dst.writestr((rename or {}).get(info.filename, info.filename), data)
    return copy


def test_not_a_wheel_is_bad_input(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.whl"
    bogus.write_text("not a zip")
    result = cli("audit", str(bogus))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert "notes.whl" in line and "not a wheel file name" in line


@pytest.mark.build
def test_the_default_wheel_is_clean(default_wheel: Path) -> None:
    result = cli("audit", "--json", str(default_wheel))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    [report] = json.loads(result.stdout)
    libraries = {Path(lib["path"]).name: lib for lib in report["libraries"]}
    assert libraries["libggml-cpu-armv8.2_2.so"]["rule"] == "variant armv8.2_2"
    assert libraries["libggml-base.so"]["rule"] == "baseline armv8-a"
    used = {name: dict(lib["features"]) for name, lib in libraries.items()}
    assert used["libggml-cpu-armv8.2_2.so"]["dotprod"] > 0 and used["libggml-cpu-armv8.2_2.so"]["fp16"] > 0
    assert used["libggml-cpu-armv8.6_1.so"]["i8mm"] > 0 and used["libggml-cpu-armv8.6_2.so"]["sve2"] > 0
    assert "dotprod" not in used["libggml-cpu-armv8.0_1.so"]
    assert not any(lib["violations"] for lib in libraries.values())


@pytest.mark.build
def test_a_variant_built_beyond_its_isa_fails(default_wheel: Path, tmp_path: Path) -> None:
    """The armv8.0 variant replaced by an armv8.0 variant compiled with +dotprod (armv8.2_2's bytes)."""
    bad = rewritten(default_wheel, tmp_path, replace={"libggml-cpu-armv8.0_1.so": "libggml-cpu-armv8.2_2.so"})
    result = cli("audit", str(bad))
    assert result.returncode == 1, result.stdout[-3000:]
    [line] = result.stderr.splitlines()
    dotprod = re.search(r"libggml-cpu-armv8\.0_1\.so: \d+ need dotprod, e\.g\. `(\w+) [^`]*` at 0x[0-9a-f]+ "
                        r"\(\.text, file offset 0x[0-9a-f]+\)", line)
    assert dotprod and dotprod[1] in ("sdot", "udot"), line
    assert "libggml-cpu-armv8.0_1.so [variant armv8.0_1]: FAIL" in result.stdout
    assert "libggml-cpu-armv8.2_2.so [variant armv8.2_2]: ok" in result.stdout


@pytest.mark.build
def test_a_core_library_beyond_the_baseline_fails(default_wheel: Path, tmp_path: Path) -> None:
    bad = rewritten(default_wheel, tmp_path, replace={"libggml-base.so": "libggml-cpu-armv8.2_2.so"})
    result = cli("audit", str(bad))
    assert result.returncode == 1, result.stdout[-3000:]
    assert "libggml-base.so [baseline armv8-a]: FAIL" in result.stdout
    assert re.search(r"llama_cpp/lib/libggml-base\.so: \d+ need dotprod, e\.g\. `[su]dot ", result.stderr)


@pytest.mark.build
def test_builds_audit_stage_refuses_the_sabotaged_wheel(default_wheel: Path, tmp_path: Path, cache: Cache) -> None:
    """What `build` runs before dist/ (pipeline.Auditor): it passes the real wheel and raises on the sabotage."""
    config = load(REPO)
    pin = config.pin(None)
    from llama_wheels.stages.fetch import fetch_sdist
    from llama_wheels.stages.patching import prepare

    tree = prepare(pin, fetch_sdist(pin, cache), config.patches_dir, cache).tree
    assert "within their ISA" in IsaAuditor().audit(default_wheel, tree, "linux-aarch64")
    bad = rewritten(default_wheel, tmp_path, replace={"libggml-cpu-armv8.0_1.so": "libggml-cpu-armv8.2_2.so"})
    with pytest.raises(VerifyError, match=r"libggml-cpu-armv8\.0_1\.so: \d+ need dotprod, e\.g\. `[su]dot "):
        IsaAuditor().audit(bad, tree, "linux-aarch64")


@pytest.mark.build
def test_an_unknown_variant_is_bad_input(default_wheel: Path, tmp_path: Path, cache: Cache) -> None:
    assert "armv7.7_1" not in pinned_variants(default_wheel, load(REPO), cache)
    bad = rewritten(default_wheel, tmp_path, rename={f"{LIB}/libggml-cpu-armv8.0_1.so":
                                                     f"{LIB}/libggml-cpu-armv7.7_1.so"})
    result = cli("audit", str(bad))
    assert result.returncode == 2, result.stdout[-3000:]
    [line] = result.stderr.splitlines()
    assert "libggml-cpu-armv7.7_1.so is CPU variant 'armv7.7_1'" in line and "declared: armv8.0_1" in line


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
    # human output: a heading, one line per library, a verdict line
    assert len(result.stdout.splitlines()) == 3
    assert result.stdout.splitlines()[-1] == "verdict: 1 of 1 wheel(s) pass the ISA audit"
    bad = wheel_with([*base, "smmla v0.4s, v1.16b, v2.16b"], tmp_path / "bad")
    result = cli("audit", str(bad))
    assert result.returncode == 1
    _, library, verdict = result.stdout.splitlines()
    assert library.startswith("  libggml-base.dylib [baseline armv8.4-a+fp16]: FAIL: 1 need i8mm, e.g. `smmla ")
    assert verdict == f"verdict: 0 of 1 wheel(s) pass the ISA audit; failing: {bad.name}"
    assert re.search(r"libggml-base\.dylib: 1 need i8mm, e\.g\. `smmla v0\.4s, v1\.16b, v2\.16b` at 0x[0-9a-f]+ "
                     r"\(__TEXT,__text, file offset 0x[0-9a-f]+\)", result.stderr), result.stderr


@pytest.mark.build
def test_a_fixed_isa_wheel_beyond_its_isa_fails(default_wheel: Path, tmp_path: Path) -> None:
    """A fixed-ISA wheel is held to cpu-isa.txt: armv8.2_2's code (dotprod + fp16) as libggml-cpu.so passes as
    armv8.2-a+dotprod+fp16 and fails as armv8.2-a+dotprod (fp16 is optional in armv8.2-a, not implied)."""
    def fixed(isa_name: str, out: Path) -> Path:
        out.mkdir()
        copy = out / default_wheel.name
        with zipfile.ZipFile(default_wheel) as src, zipfile.ZipFile(copy, "w") as dst:
            for info in src.infolist():
                if "/libggml-cpu-" not in info.filename:
                    dst.writestr(info.filename, src.read(info))
            dst.writestr(f"{LIB}/libggml-cpu.so", src.read(f"{LIB}/libggml-cpu-armv8.2_2.so"))
            dst.writestr(f"{LIB}/cpu-isa.txt", isa_name + "\n")
        return copy

    result = cli("audit", str(fixed("armv8.2-a+dotprod+fp16", tmp_path / "ok")))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "libggml-cpu.so [fixed ISA armv8.2-a+dotprod+fp16]: ok; uses dotprod 891, fp16 361" in result.stdout
    result = cli("audit", str(fixed("armv8.2-a+dotprod", tmp_path / "bad")))
    assert result.returncode == 1
    assert re.search(r"llama_cpp/lib/libggml-cpu\.so: 361 need fp16, e\.g\. `f\w+ [^`]*h\d", result.stderr), \
        result.stderr


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


@pytest.mark.build
def test_the_macos_wheel_holds_each_apple_variant_to_its_features(macos_wheel: Path, tmp_path: Path) -> None:
    """The real macos-arm64 wheel: apple_m1 has no i8mm or SME, apple_m2_m3 no SME, apple_m4 no SVE; every
    other library stays within the M1 baseline. Its apple_m1 library swapped for apple_m2_m3's bytes fails."""
    result = cli("audit", "--json", str(macos_wheel))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    [report] = json.loads(result.stdout)
    libraries = {Path(lib["path"]).name: lib for lib in report["libraries"]}
    used = {name: dict(lib["features"]) for name, lib in libraries.items()}
    for variant, march in (("apple_m1", "armv8.2-a+dotprod"), ("apple_m2_m3", "armv8.6-a+dotprod+i8mm"),
                           ("apple_m4", "armv9.2-a+dotprod+i8mm+nosve+sme")):
        name = f"libggml-cpu-{variant}.so"
        assert libraries[name]["rule"] == f"variant {variant}"
        baseline = instruction_features("armv8.4-a+fp16")
        assert set(libraries[name]["allowed"]) == baseline | instruction_features(march)
        assert used[name]["dotprod"] > 0
    m1, m2_m3, m4 = (used[f"libggml-cpu-{v}.so"] for v in ("apple_m1", "apple_m2_m3", "apple_m4"))
    assert not {"i8mm", "sme", "sve", "sve2"} & set(m1)
    assert m2_m3["i8mm"] > 0 and not {"sme", "sve"} & set(m2_m3)
    assert m4["i8mm"] > 0 and not {"sve", "sve2"} & set(m4)
    assert libraries["libggml-base.dylib"]["rule"] == "baseline armv8.4-a+fp16"
    assert not any(lib["violations"] for lib in libraries.values())

    bad = rewritten(macos_wheel, tmp_path, replace={"libggml-cpu-apple_m1.so": "libggml-cpu-apple_m2_m3.so"})
    result = cli("audit", str(bad))
    assert result.returncode == 1, result.stdout[-3000:]
    assert "libggml-cpu-apple_m1.so [variant apple_m1]: FAIL" in result.stdout
    assert re.search(r"libggml-cpu-apple_m1\.so: \d+ need i8mm, e\.g\. `(?:[su]+mmla|usdot|sudot) ", result.stderr), \
        result.stderr
