from __future__ import annotations

import pytest

from llama_wheels.stages.zigcc import UnsupportedFlag, translate_args, translate_march


@pytest.mark.parametrize(
    ("march", "mcpu"),
    [
        ("armv8-a", "generic"),
        ("armv8.2-a+dotprod", "generic+v8_2a+dotprod"),
        ("armv8.2-a+dotprod+fp16", "generic+v8_2a+dotprod+fullfp16"),
        ("armv8.2-a+dotprod+fp16+sve", "generic+v8_2a+dotprod+fullfp16+sve"),
        ("armv8.6-a+dotprod+fp16+sve+i8mm+sve2", "generic+v8_6a+dotprod+fullfp16+sve+i8mm+sve2"),
        ("armv9.2-a+dotprod+fp16+sve+i8mm+sme", "generic+v9_2a+dotprod+fullfp16+sve+i8mm+sme"),
        ("armv8.2-a+dotprod+fp16+nosve", "generic+v8_2a+dotprod+fullfp16-sve"),
        ("armv8.2a", "generic+v8_2a"),  # 0.3.4's spelling
        # ggml's apple_m4: a v9 level without SVE is the v8 level it includes (zig's v9_2a forces SVE2 and SVE)
        ("armv9.2-a+dotprod+i8mm+nosve+sme", "generic+v8_7a+dotprod+i8mm-sve+sme"),
    ],
)
def test_march_becomes_zig_mcpu(march: str, mcpu: str) -> None:
    assert translate_march(march) == mcpu


def test_other_arguments_are_kept_in_order() -> None:
    args = ["-O3", "-march=armv8.2-a+dotprod", "-c", "x.c", "-o", "x.o"]
    assert translate_args(args) == ["-O3", "-mcpu=generic+v8_2a+dotprod", "-c", "x.c", "-o", "x.o"]


def test_a_link_does_not_select_a_cpu_for_zigs_runtime() -> None:
    """CMake's try_compile links with the check's -march; zig would build its runtime for that CPU (per variant,
    on an empty cache). A link gets the default CPU; a compile, or a compile and link of a source, keeps it."""
    link = ["-march=armv8.6-a+dotprod+i8mm", "CMakeFiles/cmTC_1.dir/src.cxx.o", "-o", "cmTC_1"]
    assert translate_args(link) == ["CMakeFiles/cmTC_1.dir/src.cxx.o", "-o", "cmTC_1"]
    for compiles in (["-march=armv8.6-a+i8mm", "-c", "src.cxx", "-o", "src.o"],
                     ["-march=armv8.6-a+i8mm", "src.c", "-o", "a.out"], ["-march=armv8.6-a+i8mm", "-E", "-"]):
        assert "-mcpu=generic+v8_6a+i8mm" in translate_args(compiles), compiles
    with pytest.raises(UnsupportedFlag):
        translate_args(["-march=x86-64-v3", "a.o", "-o", "a"])


@pytest.mark.parametrize("bad", ["-march=native", "-mcpu=native", "-march=x86-64-v3"])
def test_untranslatable_flags_are_refused(bad: str) -> None:
    with pytest.raises(UnsupportedFlag):
        translate_args([bad])


def test_an_apple_bundle_becomes_a_dylib_with_a_relocatable_install_name() -> None:
    """CMake links a MODULE library (ggml's backends with GGML_BACKEND_DL) on Darwin with -bundle, which zig
    cannot link; see tests/unit/test_macos.py for the real link."""
    args = ["-O3", "-bundle", "-Wl,-headerpad_max_install_names", "-o", "bin/libggml-cpu-apple_m1.so", "a.o"]
    assert translate_args(args) == ["-O3", "-dynamiclib", "-Wl,-install_name,@rpath/libggml-cpu-apple_m1.so",
                                    "-Wl,-headerpad_max_install_names", "-o", "bin/libggml-cpu-apple_m1.so", "a.o"]
    with pytest.raises(UnsupportedFlag, match="-bundle without -o FILE"):
        translate_args(["-bundle", "a.o"])

