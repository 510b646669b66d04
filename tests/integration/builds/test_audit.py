"""``llama-wheels audit`` on real wheels: the default wheel is clean; a variant library or a core library with
code beyond its ISA fails, naming the library, the instruction and its offset; bad input exits 2."""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from llama_wheels.config import load
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import VerifyError
from llama_wheels.judges.isa_audit import IsaAuditor, pinned_variants
from llama_wheels.oracle import instruction_features
from tests.support.checkout import REPO, cli

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


def test_a_core_library_beyond_the_baseline_fails(default_wheel: Path, tmp_path: Path) -> None:
    bad = rewritten(default_wheel, tmp_path, replace={"libggml-base.so": "libggml-cpu-armv8.2_2.so"})
    result = cli("audit", str(bad))
    assert result.returncode == 1, result.stdout[-3000:]
    assert "libggml-base.so [baseline armv8-a]: FAIL" in result.stdout
    assert re.search(r"llama_cpp/lib/libggml-base\.so: \d+ need dotprod, e\.g\. `[su]dot ", result.stderr)


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


def test_an_unknown_variant_is_bad_input(default_wheel: Path, tmp_path: Path, cache: Cache) -> None:
    assert "armv7.7_1" not in pinned_variants(default_wheel, load(REPO), cache)
    bad = rewritten(default_wheel, tmp_path, rename={f"{LIB}/libggml-cpu-armv8.0_1.so":
                                                     f"{LIB}/libggml-cpu-armv7.7_1.so"})
    result = cli("audit", str(bad))
    assert result.returncode == 2, result.stdout[-3000:]
    [line] = result.stderr.splitlines()
    assert "libggml-cpu-armv7.7_1.so is CPU variant 'armv7.7_1'" in line and "declared: armv8.0_1" in line


def test_a_fixed_isa_wheel_beyond_its_isa_fails(default_wheel: Path, tmp_path: Path) -> None:
    """A fixed-ISA wheel is held to cpu-isa.txt: armv8.2_2's code (dotprod + fp16) as libggml-cpu.so passes as
    armv8.2-a+dotprod+fp16 and fails as armv8.2-a+dotprod (fp16 is optional in armv8.2-a, not implied)."""
    def fixed(isa_name: str, out: Path, guard: Callable[[str], str] = lambda source: source) -> Path:
        out.mkdir()
        copy = out / default_wheel.name
        with zipfile.ZipFile(default_wheel) as src, zipfile.ZipFile(copy, "w") as dst:
            for info in src.infolist():
                if "/libggml-cpu-" not in info.filename and info.filename != "llama_cpp/_backends.py":
                    dst.writestr(info.filename, src.read(info))
            dst.writestr(f"{LIB}/libggml-cpu.so", src.read(f"{LIB}/libggml-cpu-armv8.2_2.so"))
            dst.writestr(f"{LIB}/cpu-isa.txt", isa_name + "\n")
            dst.writestr("llama_cpp/_backends.py", guard(src.read("llama_cpp/_backends.py").decode()))
        return copy

    result = cli("audit", str(fixed("armv8.2-a+dotprod+fp16", tmp_path / "ok")))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "libggml-cpu.so [fixed ISA armv8.2-a+dotprod+fp16]: ok; uses dotprod 891, fp16 361" in result.stdout
    result = cli("audit", str(fixed("armv8.2-a+dotprod", tmp_path / "bad")))
    assert result.returncode == 1
    assert re.search(r"llama_cpp/lib/libggml-cpu\.so: 361 need fp16, e\.g\. `f\w+ [^`]*h\d", result.stderr), \
        result.stderr

    # The fixed-ISA gap: an import guard that does not test dotprod lets the wheel import on a CPU without
    # it, so the audit must not allow dotprod although armv8.2-a+dotprod implies it.
    def blind_to_dotprod(source: str) -> str:
        assert '    "dotprod": (_AT_HWCAP, 1 << 20),  # asimddp\n' in source
        return source.replace('    "dotprod": (_AT_HWCAP, 1 << 20),  # asimddp\n', "")

    result = cli("audit", str(fixed("armv8.2-a+dotprod+fp16", tmp_path / "blind", blind_to_dotprod)))
    assert result.returncode == 1, result.stdout[-3000:]
    assert re.search(r"llama_cpp/lib/libggml-cpu\.so: 891 need dotprod, e\.g\. `[us]dot ", result.stderr), \
        result.stderr


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

