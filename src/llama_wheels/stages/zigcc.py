"""Compiler front end that lets zig stand in for a GCC cross compiler.

CMake, scikit-build-core and ggml speak GCC: ggml asks for its ARM variants with
``-march=armv8.2-a+dotprod+fp16``. ``zig cc`` is clang and refuses that spelling for
aarch64; it wants ``-mcpu=generic+v8_2a+dotprod+fullfp16``. This module rewrites the
arguments and then *replaces itself* with zig (``os.execv``), so the exit status and
output are zig's own.

Usage (from the generated shims): ``python -m llama_wheels.stages.zigcc {cc,c++} ZIG_TARGET ARGS...``
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence

# GCC extension names whose LLVM/zig feature name differs. Anything else passes through.
_FEATURE_NAMES = {"fp16": "fullfp16", "crypto": "crypto", "simd": "neon", "fp": "fp_armv8"}
_ARCH = re.compile(r"^armv(?P<major>\d)(?:\.(?P<minor>\d))?-?a$")


class UnsupportedFlag(ValueError):
    """A compiler flag the wrapper cannot translate faithfully."""


def translate_march(value: str) -> str:
    """``armv8.2-a+dotprod+fp16`` -> ``generic+v8_2a+dotprod+fullfp16`` (an ``-mcpu`` value)."""
    arch, *extensions = value.split("+")
    match = _ARCH.match(arch)
    if match is None:
        raise UnsupportedFlag(f"-march={value}: not an ARM A-profile architecture zig understands")
    major, minor = match["major"], match["minor"] or "0"
    parts = ["generic"] if (major, minor) == ("8", "0") else [f"generic+v{major}_{minor}a"]
    for ext in extensions:
        if ext.startswith("no"):
            parts.append("-" + _FEATURE_NAMES.get(ext[2:], ext[2:]))
        else:
            parts.append("+" + _FEATURE_NAMES.get(ext, ext))
    return parts[0] + "".join(parts[1:])


def translate_args(args: Sequence[str]) -> list[str]:
    """Rewrite GCC-only flags for zig; keep the order of everything else."""
    out: list[str] = []
    for arg in args:
        if arg.startswith("-march="):
            out.append("-mcpu=" + translate_march(arg.removeprefix("-march=")))
        elif arg in ("-mcpu=native", "-march=native", "-mtune=native"):
            raise UnsupportedFlag(f"{arg}: a cross build cannot target the build machine's CPU")
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] not in ("cc", "c++"):
        print("usage: python -m llama_wheels.stages.zigcc {cc,c++} ZIG_TARGET [ARGS...]", file=sys.stderr)
        return 2
    tool, target, rest = argv[0], argv[1], argv[2:]
    try:
        translated = translate_args(rest)
    except UnsupportedFlag as exc:
        print(f"llama-wheels zigcc: {exc}", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "ziglang", tool, "-target", target, *translated]
    os.execv(sys.executable, cmd)
    return 127  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
