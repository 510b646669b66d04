"""Stage ``build``: scikit-build-core, through the standard ``python -m build`` frontend.

The CMake arguments are exactly the job's (``build_settings``; CI's hooks pass the same, and for a job
that needs the platform SDK the same for the runner's own compiler: ``sdk_build_settings``); the
compiler is the zig toolchain; the CMake build tree is kept in the cache (keyed by job, toolchain and
source tree) so a rebuild only recompiles what changed, and ccache makes even a fresh tree cheap. The
wheel is written to a temp directory that the caller publishes; an interrupted or failed build leaves no
wheel anywhere.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llama_wheels.core import runner
from llama_wheels.core.cache import Cache, hash_key, locked
from llama_wheels.core.errors import BuildError
from llama_wheels.plan import BuildJob
from llama_wheels.stages.patching import PreparedSource, source_lock
from llama_wheels.stages.toolchain import Toolchain, require_zig_can_build

# The only variables of the caller's environment a build sees (an allowlist: scikit-build-core reads every
# SKBUILD_* setting, CMake CMAKE_* and CC/CFLAGS..., clang CPATH/C_INCLUDE_PATH/LIBRARY_PATH, ccache
# CCACHE_*; none of them is in the provenance record, so none may change the wheel). Where programs are
# (PATH: the tools found are recorded by version), a home and a temp directory, the locale (messages only),
# and CCACHE_DISABLE: compiling without ccache gives the same bytes (proved by
# tests/integration/builds/test_reproducible.py).
INHERITED = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "CCACHE_DISABLE")
# Link without debug information. zig's linker takes GNU ld's spelling for every target (ELF and Mach-O);
# Apple's ld spells it -S (no debug map, the stabs that name each object file's path in the build tree).
ZIG_STRIP = "-Wl,--strip-debug"
APPLE_STRIP = "-Wl,-S"


@dataclass(frozen=True, kw_only=True)
class BuildSettings:
    """What the build stage gives scikit-build-core: the CMake build tree and every CMake definition."""

    build_dir: Path
    defines: tuple[tuple[str, str], ...]

    def config_settings(self) -> list[str]:
        """As scikit-build-core config settings (``-C``), in order: nothing implicit."""
        return [f"build-dir={self.build_dir}", *(f"cmake.define.{name}={value}" for name, value in self.defines)]


def _flag_defines(job: BuildJob, source_tree: Path, build_dir: Path, *, strip: str) -> list[tuple[str, str]]:
    """``job``'s compile and link flags, for zig and the platform's own compiler alike."""
    flags = " ".join([
        *job.compiler_flags,
        # No build paths in the binaries (reproducible wheels; see the provenance issue). ccache with
        # CCACHE_BASEDIR hands the compiler paths relative to the build tree (`__FILE__` becomes
        # ../../src/<key>/...), so the relative spelling is mapped too: same bytes with or without ccache.
        f"-ffile-prefix-map={source_tree}=/src/llama-cpp-python",
        f"-ffile-prefix-map={os.path.relpath(source_tree, build_dir)}=/src/llama-cpp-python",
        f"-ffile-prefix-map={build_dir}=/build",
    ])
    return [("CMAKE_C_FLAGS", flags), ("CMAKE_CXX_FLAGS", flags),
            ("CMAKE_SHARED_LINKER_FLAGS", strip), ("CMAKE_MODULE_LINKER_FLAGS", strip)]


def build_settings(job: BuildJob, source: PreparedSource, toolchain: Toolchain, build_dir: Path) -> BuildSettings:
    """The settings for building ``job`` from ``source`` with the zig ``toolchain`` into ``build_dir``."""
    defines = [*job.defines, ("CMAKE_TOOLCHAIN_FILE", str(toolchain.toolchain_file))]
    # zig links its own libc++/libunwind, compiled with DWARF that names zig's install path and the
    # directory of whichever build first filled zig's cache: strip it (zig strips .symtab too).
    defines += _flag_defines(job, source.tree, build_dir, strip=ZIG_STRIP)
    if toolchain.launcher:
        defines += [("CMAKE_C_COMPILER_LAUNCHER", toolchain.launcher),
                    ("CMAKE_CXX_COMPILER_LAUNCHER", toolchain.launcher)]
    return BuildSettings(build_dir=build_dir, defines=tuple(defines))


def sdk_build_settings(job: BuildJob, source: PreparedSource, build_dir: Path) -> BuildSettings:
    """The settings for ``job`` when it needs the platform SDK (``toolchain.sdk_switches_on``): compiled by
    Apple clang and linked by Apple's ld on the macOS CI runner, with the definitions and flags of a zig
    build, but no toolchain file or compiler launcher (the runner's own compiler, without ccache)."""
    return BuildSettings(build_dir=build_dir,
                         defines=(*job.defines, *_flag_defines(job, source.tree, build_dir, strip=APPLE_STRIP)))


def build_dir_for(job: BuildJob, toolchain: Toolchain, cache: Cache) -> Path:
    """One CMake build tree per target, pin and compiler: a changed patch or flag rebuilds incrementally."""
    return cache.builds / f"{job.target.name}@{job.pin.name}-{hash_key([toolchain.identity], length=8)}"


def build_environment(toolchain: Toolchain, cache: Cache, source_tree: Path,
                      source_date_epoch: int | None) -> dict[str, str]:
    """The whole environment of a build: the ``INHERITED`` variables of this process, then ours."""
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
    env |= toolchain.env
    env |= {
        "_PYTHON_HOST_PLATFORM": toolchain.platform.host_platform,
        "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2),
        # Paths under the cache (source tree, build tree) hash as relative paths: jobs share ccache hits.
        "CCACHE_BASEDIR": str(cache.root),
        # llama.cpp's CMake asks git for a commit to embed (ggml_commit()): never one of an enclosing repo.
        "GIT_CEILING_DIRECTORIES": str(source_tree.parent),
    }
    if source_date_epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(source_date_epoch)
    return env


@contextmanager
def build_wheel(job: BuildJob, source: PreparedSource, toolchain: Toolchain, cache: Cache,
                *, source_date_epoch: int | None = None) -> Iterator[Path]:
    """Build ``job``'s wheel; yields its path in a temp directory that is removed afterwards."""
    require_zig_can_build(job)
    job.check_against(source.cmake_options)
    build_dir = build_dir_for(job, toolchain, cache)
    out = Path(tempfile.mkdtemp(prefix="llama-wheels-build-"))
    env = build_environment(toolchain, cache, source.tree, source_date_epoch)
    settings = build_settings(job, source, toolchain, build_dir).config_settings()
    try:
        # One build per build tree at a time; the source tree must not be re-prepared underneath it.
        with locked(build_dir.with_name(build_dir.name + ".lock")), \
                locked(source_lock(cache, source.pin), shared=True):
            if PreparedSource.load(source.tree).key != source.key:
                raise BuildError(f"{job.name}: another llama-wheels run re-prepared {source.tree} with other "
                                 "patches since this run prepared it; run again")
            runner.run(
                [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out,
                 *(f"--config-setting={s}" for s in settings), source.tree],
                env=env,
                inherit_env=False,
                progress=f"build    {job.name}",
            )
        wheels = sorted(out.glob("*.whl"))
        if len(wheels) != 1:
            raise BuildError(f"{job.name}: expected one wheel from the build, found {len(wheels)} in {out}")
        yield wheels[0]
    finally:
        shutil.rmtree(out, ignore_errors=True)
