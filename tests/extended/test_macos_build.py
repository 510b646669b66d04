"""The macOS CPU wheel, cross built with zig and checked statically (macos.py, the ISA audit).

In the extended tier: a cold cross build of three Apple variants is 8.4 min of the full tier's cold budget
on 2 cores (measured 2026-12-07), and the CI workflow builds the same target natively on macos-14 (with
delocate and the audit of `llama-wheels build`) and runs the wheel test suite there. The fast tier keeps
the Mach-O checks on tiny zig-made files (tests/unit/test_macos.py).

No macOS machine is here: what dyld would do is read from the Mach-O headers (macholib). The CI workflow
builds the same target on macos-14 (with delocate) and runs the wheel test suite there.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from llama_wheels.binaries.macho import wheel_machos
from llama_wheels.oracle import instruction_features
from llama_wheels.stages.macos import check_macos_wheel, describe
from tests.support.checkout import cli, pinned
from tests.support.rewrite import rewritten
from tests.support.wheelfactory import record_data
from tests.support.zig import MACOS, TAG


def test_macos_cpu_wheel_cross_built_with_zig(tmp_path: Path) -> None:
    """The macos-arm64 target, cross built here as plan() says; the checks CI makes after delocate.

    As macOS would load it: every dylib named @rpath/<name>, found through LC_RPATH @loader_path, the
    libraries llama_cpp opens by path present; provenance recorded like a Linux wheel's.
    """
    dist = tmp_path / "dist"
    log = tmp_path / "build.log"
    result = cli("--log", str(log), "build", "macos-arm64", "--no-verify", "--dist", str(dist))
    assert result.returncode == 0, f"build failed (log {tmp_path / 'build.log'}):\n{result.stderr[-3000:]}"
    [wheel] = dist.glob("*.whl")
    assert wheel.name == f"llama_cpp_python-{pinned().version}-{TAG}.whl"
    libraries = check_macos_wheel(wheel, MACOS)
    print(describe(libraries))  # the otool -l view, in the test log
    names = {Path(lib.path).name for lib in libraries}
    # Runtime dispatch: one CPU library per Apple variant, named as ggml's loader looks for them (.so)
    variants = {"libggml-cpu-apple_m1.so", "libggml-cpu-apple_m2_m3.so", "libggml-cpu-apple_m4.so"}
    assert {"libllama.dylib", "libggml.dylib", "libggml-base.dylib"} | variants <= names
    assert "libggml-cpu.dylib" not in names
    assert "libggml-metal.dylib" not in names  # patch 0004: -DGGML_METAL=OFF is honoured
    for lib in libraries:
        assert lib.filetype == "dylib" and lib.install_name == f"@rpath/{Path(lib.path).name}", lib
        assert lib.rpaths == ("@loader_path",), lib
        assert all(d.startswith(("@rpath/", "/usr/lib/")) for d in lib.dylibs), lib
    loaded = {d for lib in libraries for d in lib.dylibs}
    assert not [d for d in loaded if "Metal" in d or "Foundation" in d or "Accelerate" in d], loaded
    assert {m for m in wheel_machos(wheel) for m in m.minos} == {"11.0"}
    record = record_data(wheel)
    assert record is not None and record["target"]["name"] == "macos-arm64"
    assert record["target"]["index"] == "cpu"
    # What the wheel suite on a Mac judges by: every variant the wheel ships, with the features ggml scores
    assert record["target"]["cpu_variants"] == {"apple_m1": ["dotprod"], "apple_m2_m3": ["dotprod", "i8mm"],
                                                "apple_m4": ["dotprod", "i8mm", "sme"]}
    inspected = cli("inspect", str(wheel), timeout=300)
    assert inspected.returncode == 0, inspected.stderr
    assert "requires  macOS >= 11.0" in inspected.stdout
    assert "target     macos-arm64 (macos-arm64, index cpu)" in inspected.stdout


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
