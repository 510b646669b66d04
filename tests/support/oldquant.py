"""The real writer of the removed Q4_0_4_4 / Q4_0_4_8 / Q4_0_8_8 types: llama.cpp's own llama-quantize.

``convert-model`` must be proven against files the old llama.cpp wrote, not only against a round trip
of our own interleaving. llama-cpp-python 0.3.2 vendors llama.cpp 74d73dc85, whose ``llama-quantize``
still offers those three types. ``ensure_llama_quantize`` builds just that program natively (host
compiler, CMake, ``GGML_NATIVE=OFF``) from the sha256-checked sdist, once, into the cache outside the
clone (``<cache>/tools/llama-quantize-0.3.2-<key>/``); ``quantize`` runs it.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

from llama_wheels.config import Pin
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache, atomic_path, hash_key, locked
from llama_wheels.stages.fetch import fetch_sdist

# The last llama-cpp-python release whose llama.cpp writes the interleaved types (0.3.4 dropped them).
SOURCE = Pin(
    name="old-quantize",
    version="0.3.2",
    sdist_sha256="8fbf246a55a999f45015ed0d48f91b4ae04ae959827fac1cd6ac6ec65aed2e2f",
    llama_cpp_commit="74d73dc85cc2057446bf63cc37ff649ae7cebd80",
    patches=(),
    switches={},
)
CMAKE_DEFINES = (
    ("CMAKE_BUILD_TYPE", "Release"),
    ("GGML_NATIVE", "OFF"),
    ("GGML_OPENMP", "OFF"),
    ("BUILD_SHARED_LIBS", "OFF"),
    ("LLAMA_CURL", "OFF"),
    ("LLAMA_BUILD_TESTS", "OFF"),
    ("LLAMA_BUILD_SERVER", "OFF"),
    ("LLAMA_BUILD_EXAMPLES", "ON"),  # examples/quantize is llama-quantize
)
TARGET = "llama-quantize"
OLD_TYPE_NAMES = ("Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8")


def _compiler_identity() -> str:
    hint = "install the host compilers: apt-get install g++ (scripts/bootstrap.sh does)"
    cc, cxx = runner.require_tool("cc", hint), runner.require_tool("c++", hint)
    return runner.run([cc, "--version"], capture=True) + runner.run([cxx, "--version"], capture=True)


def ensure_llama_quantize(cache: Cache) -> Path:
    """Path of the cached llama-quantize 0.3.2 binary, building it first if needed (a few minutes)."""
    cmake = runner.require_tool("cmake", "pip install cmake (scripts/bootstrap.sh does)")
    key = hash_key([SOURCE.sdist_sha256, *(f"{k}={v}" for k, v in CMAKE_DEFINES), _compiler_identity()])
    home = cache.root / "tools" / f"llama-quantize-{SOURCE.version}-{key}"
    binary = home / "bin" / TARGET
    with locked(cache.dir("locks") / f"tool-{home.name}"):
        if binary.is_file():
            return binary
        sdist = fetch_sdist(SOURCE, cache)
        source = home / "src"
        if not (source / "CMakeLists.txt").is_file():
            with atomic_path(source, directory=True) as tmp:
                prefix = f"llama_cpp_python-{SOURCE.version}/vendor/llama.cpp/"
                with tarfile.open(sdist) as archive:
                    members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
                    for member in members:
                        member.name = member.name[len(prefix):]
                    archive.extractall(tmp, members=[m for m in members if m.name], filter="data")
        build = home / "build"
        env: dict[str, str | None] = {"CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2),
                                      "CMAKE_ARGS": None, "CFLAGS": None, "CXXFLAGS": None, "LDFLAGS": None}
        launcher = shutil.which("ccache")
        launch = [f"-DCMAKE_{lang}_COMPILER_LAUNCHER={launcher}" for lang in ("C", "CXX")] if launcher else []
        if launcher:
            env |= {"CCACHE_DIR": str(cache.ccache), "CCACHE_BASEDIR": str(home)}
        ninja = runner.find_tool("ninja")
        generator = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else []
        runner.run([cmake, "-S", source, "-B", build, *generator, "-DCMAKE_C_COMPILER=cc",
                    "-DCMAKE_CXX_COMPILER=c++", *(f"-D{k}={v}" for k, v in CMAKE_DEFINES), *launch], env=env)
        runner.run([cmake, "--build", build, "--target", TARGET], env=env)
        built = build / "bin" / TARGET
        with atomic_path(binary) as tmp:
            shutil.copyfile(built, tmp)
            tmp.chmod(0o755)
    return binary


def quantize(llama_quantize: Path, src: Path, dst: Path, type_name: str) -> Path:
    """``llama-quantize --pure SRC DST TYPE`` (every weight the same type), written atomically."""
    with atomic_path(dst) as tmp:
        runner.run([llama_quantize, "--pure", src, tmp, type_name])
    return dst
