"""macOS wheels, checked statically (macos.py): tiny Mach-O files made by zig, then the real cross build.

No macOS machine is here: what dyld would do is read from the Mach-O headers (macholib). The CI workflow
builds the same target on macos-14 (with delocate) and runs the wheel test suite there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llama_wheels.binaries.macho import macho_facts
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import RepairError
from llama_wheels.stages.macos import check_macos_wheel
from llama_wheels.stages.toolchain import zig_toolchain
from tests.support.zig import MACOS, wheel_of, zig_dylib


@pytest.fixture
def libs(tmp_path: Path) -> dict[str, Path]:
    ggml = zig_dylib(tmp_path / "libggml.dylib")
    llama = zig_dylib(tmp_path / "libllama.dylib", links=(ggml,))
    return {"llama_cpp/lib/libllama.dylib": llama, "llama_cpp/lib/libggml.dylib": ggml}


def test_bundled_libraries_via_rpath_pass(tmp_path: Path, libs: dict[str, Path]) -> None:
    facts = {f.path: f for f in check_macos_wheel(wheel_of(tmp_path, libs), MACOS)}
    llama = facts["llama_cpp/lib/libllama.dylib"]
    assert llama.archs == ("ARM64",) and llama.minos == ("11.0",)
    assert "@rpath/libggml.dylib" in llama.dylibs and llama.rpaths == ("@loader_path",)
    assert all(d.startswith(("@rpath/", "/usr/lib/")) for d in llama.dylibs)


def test_a_bundled_library_missing_from_the_wheel(tmp_path: Path, libs: dict[str, Path]) -> None:
    del libs["llama_cpp/lib/libggml.dylib"]
    with pytest.raises(RepairError, match=r"loads @rpath/libggml\.dylib, which is neither a system library"):
        check_macos_wheel(wheel_of(tmp_path, libs), MACOS)


def test_a_library_from_homebrew(tmp_path: Path) -> None:
    omp = zig_dylib(tmp_path / "libomp.dylib", install_name="/opt/homebrew/lib/libomp.dylib")
    llama = zig_dylib(tmp_path / "libllama.dylib", links=(omp,))
    with pytest.raises(RepairError, match=r"loads /opt/homebrew/lib/libomp\.dylib"):
        check_macos_wheel(wheel_of(tmp_path, {"llama_cpp/lib/libllama.dylib": llama}), MACOS)


def test_a_build_machine_rpath(tmp_path: Path) -> None:
    lib = zig_dylib(tmp_path / "libllama.dylib", rpath="/Users/runner/work/build")
    with pytest.raises(RepairError, match="LC_RPATH /Users/runner/work/build"):
        check_macos_wheel(wheel_of(tmp_path, {"llama_cpp/lib/libllama.dylib": lib}), MACOS)


def test_minos_above_the_deployment_target(tmp_path: Path) -> None:
    lib = zig_dylib(tmp_path / "libllama.dylib", target="aarch64-macos.13.0")
    with pytest.raises(RepairError, match=r"needs macOS 13.0, but the wheel tag promises 11.0"):
        check_macos_wheel(wheel_of(tmp_path, {"llama_cpp/lib/libllama.dylib": lib}), MACOS)


def test_an_x86_64_library(tmp_path: Path) -> None:
    lib = zig_dylib(tmp_path / "libllama.dylib", target="x86_64-macos.11.0")
    with pytest.raises(RepairError, match="is x86_64, not arm64 only"):
        check_macos_wheel(wheel_of(tmp_path, {"llama_cpp/lib/libllama.dylib": lib}), MACOS)


def test_the_wheel_tag(tmp_path: Path, libs: dict[str, Path]) -> None:
    with pytest.raises(RepairError, match="tag is not macosx_11_0_arm64"):
        check_macos_wheel(wheel_of(tmp_path, libs, tag="py3-none-macosx_14_0_arm64"), MACOS)


def test_an_absolute_install_name(tmp_path: Path) -> None:
    """What a cross build without rpath support produced: LC_ID_DYLIB = the path it was linked at."""
    lib = zig_dylib(tmp_path / "libllama.dylib", install_name="/root/build/bin/libllama.dylib")
    with pytest.raises(RepairError, match=r"install name \(LC_ID_DYLIB\) /root/build/bin/libllama\.dylib, "
                                          r"not @rpath/libllama\.dylib"):
        check_macos_wheel(wheel_of(tmp_path, {"llama_cpp/lib/libllama.dylib": lib}), MACOS)


def test_an_rpath_reference_without_lc_rpath(tmp_path: Path) -> None:
    ggml = zig_dylib(tmp_path / "libggml.dylib")
    llama = zig_dylib(tmp_path / "libllama.dylib", links=(ggml,), rpath=None)
    files = {"llama_cpp/lib/libllama.dylib": llama, "llama_cpp/lib/libggml.dylib": ggml}
    with pytest.raises(RepairError, match=r"libllama\.dylib loads @rpath/libggml\.dylib but has no LC_RPATH"):
        check_macos_wheel(wheel_of(tmp_path, files), MACOS)


def test_a_build_path_inside_a_library(tmp_path: Path, libs: dict[str, Path]) -> None:
    """E.g. a __FILE__ that no -ffile-prefix-map rewrote."""
    libs["llama_cpp/lib/libggml.dylib"] = zig_dylib(tmp_path / "libggml.dylib",
                                                    text="/Users/runner/work/llama/ggml.c")
    with pytest.raises(RepairError, match=r"libggml\.dylib names a build-machine path: "
                                          r"/Users/runner/work/llama/ggml\.c$"):
        check_macos_wheel(wheel_of(tmp_path, libs), MACOS)


def test_the_libraries_llama_cpp_opens_by_path(tmp_path: Path, libs: dict[str, Path]) -> None:
    del libs["llama_cpp/lib/libllama.dylib"]
    with pytest.raises(RepairError, match=r"ctypes loader opens llama_cpp/lib/libllama\.dylib, which the "
                                          "wheel does not hold"):
        check_macos_wheel(wheel_of(tmp_path, libs), MACOS)


def test_the_zig_toolchain_gives_cmake_darwin_rpath_support(tmp_path: Path) -> None:
    """CMake names Darwin libraries @rpath/... only when sw_vers answers; the toolchain file sees to it.

    Two libraries as llama-cpp-python's CMakeLists sets them up (INSTALL_RPATH @loader_path, linked with
    it), configured and linked with the zig toolchain of the macos-arm64 target on this Linux machine.
    """
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.c").write_text("int a(void) { return 1; }\n")
    (src / "b.c").write_text("int a(void);\nint b(void) { return a(); }\n")
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.21)\nproject(probe C)\n"
        "add_library(a SHARED a.c)\nadd_library(b SHARED b.c)\ntarget_link_libraries(b PRIVATE a)\n"
        # a MODULE, as ggml's GGML_BACKEND_DL backends: CMake links it with -bundle (zigcc: a dylib)
        "add_library(m MODULE b.c)\ntarget_link_libraries(m PRIVATE a)\n"
        "set_target_properties(a b m PROPERTIES INSTALL_RPATH @loader_path BUILD_WITH_INSTALL_RPATH TRUE)\n")
    cache = Cache.from_env()
    toolchain = zig_toolchain(MACOS, cache)
    bin_dir = Path(sys.executable).parent
    build = tmp_path / "build"
    env = {**os.environ, **toolchain.env}
    configure = ["-S", str(src), "-B", str(build), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={bin_dir / 'ninja'}",
                 f"-DCMAKE_TOOLCHAIN_FILE={toolchain.toolchain_file}"]
    for args in (configure, ["--build", str(build)]):
        result = subprocess.run([str(bin_dir / "cmake"), *args], capture_output=True, text=True, env=env,
                                timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    a, b = (macho_facts(name, build / name) for name in ("liba.dylib", "libb.dylib"))
    assert (a.install_name, a.rpaths) == ("@rpath/liba.dylib", ("@loader_path",))
    assert (b.install_name, b.rpaths) == ("@rpath/libb.dylib", ("@loader_path",))
    assert "@rpath/liba.dylib" in b.dylibs
    m = macho_facts("libm.so", build / "libm.so")
    assert (m.filetype, m.install_name, m.rpaths) == ("dylib", "@rpath/libm.so", ("@loader_path",))
    assert "@rpath/liba.dylib" in m.dylibs

