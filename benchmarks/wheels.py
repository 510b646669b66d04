"""The benchmarked wheels: built (or reused) by the project's pipeline, installed natively in throwaway dirs.

A wheel is installed with pip into its own ``--target`` directory, with llama-cpp-python's runtime
dependencies at the versions the emulated test bed pins (build_config/sysroot.toml): pip refuses a wheel
whose tags this machine does not support, so a successful install is itself a check. One CPU variant of a
runtime-dispatch wheel is forced by a copy of the package's ``lib/`` that holds only that variant's
library, named by ``LLAMA_CPP_LIB_PATH`` (llama-cpp-python's own override): ggml loads the best variant
*of the directory*, which is then the only one.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from llama_wheels.binaries.wheel import LIB_DIR, cpu_variants, variant_of
from llama_wheels.config import Config
from llama_wheels.config.sysroot_spec import load_sysroot_spec
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache, atomic_path
from llama_wheels.core.errors import UserError
from llama_wheels.pipeline import build_targets


def build(config: Config, targets: Sequence[str], cache: Cache, dist: Path) -> dict[str, Path]:
    """``targets``' wheels at the default pin, from the finished-wheel cache when their inputs are unchanged.

    Each target gets its own ``dist/<target>/`` (targets of one platform make wheels of the same file name).
    No emulated smoke test: these wheels run natively, and the benchmark itself installs and runs them.
    """
    wheels = {}
    for target in targets:
        [built] = build_targets(config, [target], None, dist=dist / target, cache=cache, verifier=None)
        wheels[target] = built.wheel
    return wheels


def install(wheel: Path, dest: Path, config: Config, scratch: Path) -> Path:
    """pip-install ``wheel`` (and its runtime dependencies, pinned as in sysroot.toml) into ``dest``."""
    pins = load_sysroot_spec(config.root).wheels
    constraints = scratch / "constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    with atomic_path(dest, directory=True) as tmp:
        runner.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--only-binary",
                ":all:",
                "--target",
                tmp,
                "--constraint",
                constraints,
                wheel,
            ]
        )
    return dest


def lib_dir(site: Path) -> Path:
    path = site / LIB_DIR
    if not (path / "libllama.so").is_file():
        raise UserError(f"{site}: no {LIB_DIR}/libllama.so; is this an installed llama-cpp-python wheel?")
    return path


def _lib_files(site: Path) -> dict[str, Path]:
    """The files of ``site``'s ``llama_cpp/lib``, by their path in the package (as in the wheel)."""
    return {p.relative_to(site).as_posix(): p for p in lib_dir(site).iterdir() if p.is_file()}


def variants(site: Path) -> list[str]:
    """The CPU variants a runtime-dispatch install ships (libggml-cpu-<variant>.so), sorted by name."""
    return cpu_variants(_lib_files(site))


def single_variant_lib(site: Path, variant: str, dest: Path) -> Path:
    """A copy of ``site``'s ``llama_cpp/lib`` whose only CPU library is ``variant`` (LLAMA_CPP_LIB_PATH)."""
    shipped = variants(site)
    if variant not in shipped:
        raise UserError(f"{site}: no CPU variant {variant!r} (it ships {', '.join(shipped) or 'none'})")
    with atomic_path(dest, directory=True) as tmp:
        for name, path in _lib_files(site).items():
            if variant_of(name) in (None, variant):
                shutil.copy2(path, tmp / path.name)  # copies, not symlinks: $ORIGIN must be this directory
    return dest
