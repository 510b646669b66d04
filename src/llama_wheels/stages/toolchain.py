"""The cross toolchain: zig behind small compiler shims, a CMake toolchain file, and ccache.

The shims run ``llama_wheels.stages.zigcc`` (which translates GCC's ``-march`` for zig) with a fixed zig
target, so CMake and ggml see an ordinary GCC-like cross compiler. zig's own cache and ccache live in
the llama-wheels cache outside the clone. ``identity`` names the exact compiler (zig version + the
wrapper's hash) so build caches are keyed by it.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from llama_wheels.config.platforms import Platform, platform
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache, atomic_path, hash_key
from llama_wheels.core.errors import ToolchainError
from llama_wheels.plan import BuildJob
from llama_wheels.stages import zigcc


@dataclass(frozen=True, kw_only=True)
class Toolchain:
    platform: Platform
    zig: Path
    zig_version: str
    toolchain_file: Path
    identity: str
    env: dict[str, str] = field(default_factory=dict)
    launcher: str | None = None

    def describe(self) -> str:
        cache = f", ccache {self.launcher}" if self.launcher else ", no ccache"
        return f"zig {self.zig_version} -target {self.platform.zig_target}{cache}"


def sdk_switches_on(job: BuildJob) -> list[str]:
    """The job's switches that need the platform SDK (e.g. Apple frameworks), which zig does not ship."""
    sdk = platform(job.platform).sdk_switches
    return [name for name, value in job.target.switches.items() if name in sdk and value not in (False, "")]


def require_zig_can_build(job: BuildJob) -> None:
    """Raise ToolchainError, naming the switches, if ``job`` needs the platform's own SDK and compiler."""
    needs = sdk_switches_on(job)
    if needs:
        raise ToolchainError(
            f"{job.name} turns on {', '.join(needs)}, which need the {job.platform} SDK frameworks that zig "
            f"does not ship: it is built by the CI workflow on a native runner (llama-wheels ci), not here"
        )


def _write_executable(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
        tmp.chmod(0o755)


def _sw_vers(version: str) -> str:
    """A ``sw_vers`` that reports ``version`` (the deployment target) as the running macOS."""
    return ("#!/bin/sh\n# llama-wheels: CMake's Darwin platform asks sw_vers for the macOS version "
            "(see toolchain.cmake).\n"
            f"case \"$1\" in\n  -productVersion) echo {version} ;;\n  -productName) echo macOS ;;\n"
            f"  *) printf 'ProductName:\\tmacOS\\nProductVersion:\\t{version}\\n' ;;\nesac\n")


def _macos_host_path(directory: Path) -> str:
    """Toolchain-file lines that put our ``sw_vers`` first on PATH while CMake configures.

    CMake's Platform/Darwin-Initialize.cmake runs ``sw_vers -productVersion``, and Platform/Darwin.cmake
    gives shared libraries rpath support (``CMAKE_SHARED_LIBRARY_RUNTIME_C_FLAG -Wl,-rpath,``, so
    ``MACOSX_RPATH``: install name ``@rpath/libX.dylib``, ``INSTALL_RPATH`` as ``LC_RPATH``) only when it
    answers 10.5 or newer. On Linux there is no sw_vers: every install name would be an absolute build path
    and no library would have an LC_RPATH. Setting those variables here does not work (CMakeGenericSystem
    resets them before the platform file runs), and CMAKE_SYSTEM_VERSION is not what it reads. The answer
    is the deployment target on every build machine, so CMake configures the same here and on a macOS CI
    runner. The variable change lasts for the configure run only (and the try_compiles it starts).
    """
    return ("# CMake's Darwin platform uses @rpath install names and LC_RPATH only when sw_vers answers:\n"
            "# ours reports the deployment target, on Linux and macOS alike (llama_wheels/stages/toolchain.py).\n"
            f"string(FIND \"$ENV{{PATH}}\" \"{directory}:\" _llama_wheels_sw_vers)\n"
            "if(NOT _llama_wheels_sw_vers EQUAL 0)\n"
            f"  set(ENV{{PATH}} \"{directory}:$ENV{{PATH}}\")\n"
            "endif()\n")


def zig_toolchain(platform: Platform, cache: Cache) -> Toolchain:
    """Create (once per compiler identity) the shims and toolchain file for ``platform``."""
    zig = runner.find_zig()
    zig_version = runner.run([zig, "version"], capture=True).strip()
    wrapper = Path(zigcc.__file__).read_bytes()
    identity = f"zig-{zig_version}-{hashlib.sha256(wrapper).hexdigest()[:12]}"
    home = cache.dir("toolchains", f"{platform.name}-{hash_key([identity, sys.executable])}")
    package_root = Path(zigcc.__file__).resolve().parents[2]
    python = shlex.quote(sys.executable)
    zig_cache = shlex.quote(str(cache.zig))
    for tool in ("cc", "c++"):
        # The cache location is in the shim itself: whoever runs the compiler (build.py, cibuildwheel on
        # CI, a person running cmake) compiles with the same cache.
        _write_executable(
            home / tool,
            f"#!/bin/sh\nZIG_GLOBAL_CACHE_DIR={zig_cache} ZIG_LOCAL_CACHE_DIR={zig_cache} "
            f"PYTHONPATH={shlex.quote(str(package_root))} exec {python} -m llama_wheels.stages.zigcc "
            f"{tool} {platform.zig_target} \"$@\"\n",
        )
    for tool in ("ar", "ranlib"):
        _write_executable(home / tool, f"#!/bin/sh\nexec {shlex.quote(str(zig))} {tool} \"$@\"\n")
    if platform.deployment_target:
        # CMake insists on finding install_name_tool for Darwin; the libraries are linked with their
        # install names and install rpath (MACOSX_RPATH, BUILD_WITH_INSTALL_RPATH), so it is never run.
        # If it ever is, fail loudly (zig ships no install_name_tool).
        _write_executable(home / "install_name_tool",
                          "#!/bin/sh\necho \"llama-wheels: install_name_tool $* is not available in a zig "
                          "cross build\" >&2\nexit 1\n")
        _write_executable(home / "macos-host" / "sw_vers", _sw_vers(platform.deployment_target))
    empty_root = cache.dir("toolchains", "empty-sysroot")
    toolchain_file = home / "toolchain.cmake"
    with atomic_path(toolchain_file) as tmp:
        tmp.write_text(
            "# Generated by llama-wheels: cross compile with zig; nothing from the build machine.\n"
            f"set(CMAKE_SYSTEM_NAME {platform.cmake_system_name})\n"
            f"set(CMAKE_SYSTEM_PROCESSOR {platform.cmake_processor})\n"
            + (_macos_host_path(home / "macos-host") +
               f"set(CMAKE_OSX_DEPLOYMENT_TARGET {platform.deployment_target} CACHE STRING \"\")\n"
               f"set(CMAKE_OSX_ARCHITECTURES {platform.cmake_processor} CACHE STRING \"\")\n"
               f"set(CMAKE_INSTALL_NAME_TOOL {home / 'install_name_tool'} CACHE FILEPATH \"\")\n"
               if platform.deployment_target else "") +
            f"set(CMAKE_C_COMPILER {home / 'cc'})\n"
            f"set(CMAKE_CXX_COMPILER {home / 'c++'})\n"
            f"set(CMAKE_AR {home / 'ar'} CACHE FILEPATH \"\")\n"
            f"set(CMAKE_RANLIB {home / 'ranlib'} CACHE FILEPATH \"\")\n"
            f"set(CMAKE_FIND_ROOT_PATH {empty_root})\n"
            "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)\n"
            "set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)\n"
            "set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)\n"
            "set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)\n"
        )
    env = {"ZIG_GLOBAL_CACHE_DIR": str(cache.zig), "ZIG_LOCAL_CACHE_DIR": str(cache.zig)}
    launcher = shutil.which("ccache")
    if launcher:
        env |= {
            "CCACHE_DIR": str(cache.ccache),
            # The shims are scripts: identify the compiler by zig's version and the wrapper, not mtimes, and
            # by the target the shim compiles for: it is not on the command line, so without it ccache hands
            # an aarch64 object to an x86_64 build of the same file with the same flags.
            "CCACHE_COMPILERCHECK": f"string:{identity} {platform.zig_target}",
            "CCACHE_NOHASHDIR": "1",
            "CCACHE_MAXSIZE": "5G",
        }
    return Toolchain(
        platform=platform,
        zig=zig,
        zig_version=zig_version,
        toolchain_file=toolchain_file,
        identity=identity,
        env=env,
        launcher=launcher,
    )
