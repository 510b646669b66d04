"""Static checks of a macOS wheel, runnable on any machine: what dyld and ``delocate`` would see.

delocate (the macOS repair tool) only runs on macOS, and a wheel cross built here with zig cannot be
loaded here either. What the loader will do is decided by the Mach-O headers, which ``macholib`` reads
anywhere (binaries/macho.py). For every Mach-O file in the wheel (found by magic number, not by file name):

- its architecture is arm64 only (no x86_64 slice, not a fat file with other slices);
- its minimum macOS (``LC_BUILD_VERSION``/``LC_VERSION_MIN_MACOSX`` minos) is the platform's deployment
  target, which is also what the wheel's tag promises (``macosx_11_0_arm64`` <-> 11.0);
- every library it loads is a system library (``/usr/lib/``, ``/System/Library/``) or one bundled in the
  wheel, reached through ``@loader_path`` or ``@rpath`` with an ``@loader_path``-relative ``LC_RPATH``;
  never a build path, ``/opt/homebrew``, ``/usr/local`` or ``@executable_path``;
- every dylib's own install name (``LC_ID_DYLIB``) is ``@rpath/<its file name>``, so whatever links
  against it records a relocatable reference, never the path it was built at;
- every ``LC_RPATH`` is ``@loader_path``-relative, and a library that loads ``@rpath/...`` has one;
- no load command at all (``LC_DYLD_ENVIRONMENT`` included) and no string in the file names a path of a
  build machine (home, temp or Homebrew directories: ``/Users/``, ``/home/``, ``/root/``, ``/tmp/``, ...);
- the libraries llama_cpp's ctypes loader opens by path (``llama_cpp/lib/libllama.dylib``,
  ``libggml.dylib``) are there, as dylibs.

On macOS, ``repair.repair_wheel`` runs ``delocate-wheel`` first and these checks after it.
"""

from __future__ import annotations

import posixpath
import zipfile
from pathlib import Path

from llama_wheels.binaries.macho import MachOFacts, wheel_machos
from llama_wheels.binaries.wheel import parse_wheel_name
from llama_wheels.config.platforms import Platform
from llama_wheels.core.errors import RepairError

_SYSTEM_PREFIXES = ("/usr/lib/", "/System/Library/")
_PACKAGE_DIRS = ("llama_cpp/",)
# What llama_cpp's ctypes loader opens by absolute path (llama_cpp.py, _ggml.py): the rest follows via @rpath.
LOADED_BY_PATH = ("llama_cpp/lib/libllama.dylib", "llama_cpp/lib/libggml.dylib")


def _resolves_to_bundled(ref: str, lib: MachOFacts, bundled: set[str]) -> bool:
    """Does ``ref`` (``@loader_path/x`` or ``@rpath/x``) name a file bundled in the wheel?"""
    here = posixpath.dirname(lib.path)
    if ref.startswith("@loader_path/"):
        candidates = [posixpath.normpath(posixpath.join(here, ref.removeprefix("@loader_path/")))]
    elif ref.startswith("@rpath/"):
        rest = ref.removeprefix("@rpath/")
        candidates = [
            posixpath.normpath(posixpath.join(here, r.removeprefix("@loader_path").lstrip("/"), rest))
            for r in lib.rpaths if r.startswith("@loader_path")
        ]
    else:
        return False
    return any(c in bundled for c in candidates)


def check_macos_wheel(wheel: Path, platform: Platform) -> list[MachOFacts]:
    """Raise RepairError unless every Mach-O in ``wheel`` is what ``platform`` promises; return the facts."""
    name = wheel.name
    parsed = parse_wheel_name(name)
    if parsed is None or parsed.platforms != {platform.wheel_platform}:
        raise RepairError(f"{name}: tag is not {platform.wheel_platform}")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    strays = sorted({n.split("/")[0] for n in names
                     if not n.startswith(_PACKAGE_DIRS) and ".dist-info/" not in n})
    if strays:
        raise RepairError(f"{name}: holds files outside the llama_cpp package: {', '.join(strays)}")
    libraries = wheel_machos(wheel)
    if not libraries:
        raise RepairError(f"{name}: contains no Mach-O library; the build installed nothing")
    bundled = {lib.path for lib in libraries}
    for lib in libraries:
        _check_library(name, lib, bundled, platform.deployment_target)
    dylibs = {lib.path for lib in libraries if lib.filetype == "dylib"}
    missing = [path for path in LOADED_BY_PATH if path not in dylibs]
    if missing:
        raise RepairError(f"{name}: llama_cpp's ctypes loader opens {', '.join(missing)}, which the wheel "
                          "does not hold as a dylib")
    return libraries


def _check_library(name: str, lib: MachOFacts, bundled: set[str], deployment_target: str | None) -> None:
    """Raise RepairError unless ``lib`` (one Mach-O file of the wheel ``name``) loads as promised."""
    if set(lib.archs) != {"ARM64"}:
        raise RepairError(f"{name}: {lib.path} is {'+'.join(lib.archs)}, not arm64 only")
    if deployment_target and set(lib.minos) != {deployment_target}:
        raise RepairError(f"{name}: {lib.path} needs macOS {'/'.join(lib.minos)}, but the wheel tag "
                          f"promises {deployment_target} (MACOSX_DEPLOYMENT_TARGET)")
    own_name = "@rpath/" + posixpath.basename(lib.path)
    if lib.filetype == "dylib" and lib.install_name != own_name:
        raise RepairError(f"{name}: {lib.path} has install name (LC_ID_DYLIB) {lib.install_name}, not "
                          f"{own_name}: what links against it would record that path")
    for rpath in lib.rpaths:
        if not rpath.startswith("@loader_path"):
            raise RepairError(f"{name}: {lib.path} has LC_RPATH {rpath}: a build-machine path, "
                              "not @loader_path")
    if lib.dyld_environment:
        raise RepairError(f"{name}: {lib.path} sets LC_DYLD_ENVIRONMENT {', '.join(lib.dyld_environment)}")
    for ref in lib.dylibs:
        if ref.startswith(_SYSTEM_PREFIXES):
            continue
        if ref.startswith("@rpath/") and not lib.rpaths:
            raise RepairError(f"{name}: {lib.path} loads {ref} but has no LC_RPATH (@loader_path) to "
                              "resolve it")
        if not _resolves_to_bundled(ref, lib, bundled):
            raise RepairError(f"{name}: {lib.path} loads {ref}, which is neither a system library "
                              f"(/usr/lib, /System) nor bundled in the wheel via @rpath/@loader_path")
    if lib.build_paths:
        raise RepairError(f"{name}: {lib.path} names a build-machine path: {lib.build_paths[0]}"
                          + (f" (and {len(lib.build_paths) - 1} more)" if len(lib.build_paths) > 1 else ""))


def describe(libraries: list[MachOFacts]) -> str:
    """An ``otool -l``-like summary: per Mach-O, its arch/minos and its LC_ID_DYLIB/LC_LOAD_DYLIB/LC_RPATH."""
    lines = []
    for lib in libraries:
        lines.append(f"{lib.path}: {lib.filetype} {'+'.join(lib.archs)} minos {'/'.join(lib.minos)}")
        if lib.install_name:
            lines.append(f"  LC_ID_DYLIB    {lib.install_name}")
        lines += [f"  LC_LOAD_DYLIB  {d}" for d in lib.dylibs]
        lines += [f"  LC_RPATH       {r}" for r in lib.rpaths]
    return "\n".join(lines)
