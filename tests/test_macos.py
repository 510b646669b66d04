"""macOS wheels, checked statically (macos.py): tiny Mach-O files made by zig, then the real cross build.

No macOS machine is here: what dyld would do is read from the Mach-O headers (macholib). The CI workflow
builds the same target on macos-14 (with delocate) and runs the wheel test suite there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from llama_wheels.cache import Cache
from llama_wheels.errors import RepairError
from llama_wheels.macos import check_macos_wheel, wheel_machos
from llama_wheels.platforms import platform

from .conftest import REPO

MACOS = platform("macos-arm64")
TAG = "py3-none-macosx_11_0_arm64"


def zig_dylib(out: Path, *, target: str = "aarch64-macos.11.0", links: tuple[Path, ...] = (),
              install_name: str | None = None, rpath: str | None = "@loader_path") -> Path:
    """A one-function dylib compiled with the pinned zig (its cache shared with the builds)."""
    src = out.with_suffix(".c")
    src.write_text(f"int {out.stem.replace('-', '_')}(void) {{ return 1; }}\n")
    args = [sys.executable, "-m", "ziglang", "cc", "-target", target, "-shared", "-o", str(out), str(src),
            f"-Wl,-install_name,{install_name or '@rpath/' + out.name}"]
    if rpath:
        args.append(f"-Wl,-rpath,{rpath}")
    for lib in links:
        args += [f"-L{lib.parent}", f"-l{lib.stem.removeprefix('lib')}"]
    zig_cache = str(Cache.from_env().zig)
    env = {**os.environ, "ZIG_GLOBAL_CACHE_DIR": zig_cache, "ZIG_LOCAL_CACHE_DIR": zig_cache}
    subprocess.run(args, check=True, capture_output=True, env=env, timeout=600)
    return out


def wheel_of(tmp_path: Path, files: dict[str, Path], tag: str = TAG) -> Path:
    wheel = tmp_path / f"llama_cpp_python-0.0.1-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, path in files.items():
            archive.write(path, name)
        archive.writestr("llama_cpp_python-0.0.1.dist-info/WHEEL", "Wheel-Version: 1.0\n")
    return wheel


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


@pytest.mark.build
@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "known: the zig cross build links with absolute build-path install names and no LC_RPATH "
    "(CMake takes Darwin rpath support from sw_vers, absent on Linux); the static check refuses it"))
def test_macos_cpu_wheel_cross_built_with_zig(tmp_path: Path) -> None:
    """The macos-arm64 target, cross built here as plan() says; the checks CI makes after delocate."""
    dist = tmp_path / "dist"
    log = tmp_path / "build.log"
    result = subprocess.run([sys.executable, "-m", "llama_wheels", "--log", str(log), "build", "macos-arm64",
                             "--no-verify", "--dist", str(dist)], cwd=REPO, capture_output=True, text=True,
                            timeout=3600)
    assert result.returncode == 0, f"build failed (log {tmp_path / 'build.log'}):\n{result.stderr[-3000:]}"
    [wheel] = dist.glob("*.whl")
    assert wheel.name == f"llama_cpp_python-0.3.36-{TAG}.whl"
    libraries = check_macos_wheel(wheel, MACOS)
    names = {Path(lib.path).name for lib in libraries}
    assert {"libllama.dylib", "libggml.dylib", "libggml-base.dylib", "libggml-cpu.dylib"} <= names
    assert "libggml-metal.dylib" not in names  # patch 0004: -DGGML_METAL=OFF is honoured
    loaded = {d for lib in libraries for d in lib.dylibs}
    assert not [d for d in loaded if "Metal" in d or "Foundation" in d or "Accelerate" in d], loaded
    assert {m for m in wheel_machos(wheel) for m in m.minos} == {"11.0"}
