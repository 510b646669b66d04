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

from llama_wheels.oracle import V9_BASE

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
    if major == "9" and "nosve" in extensions:
        # LLVM's v9 levels require SVE2 (hence SVE): zig re-enables what `-sve` removes, and the code gets SVE
        # (ggml's apple_m4 asks for armv9.2-a+...+nosve: an M4 has no SVE). armv9.N-a less SVE2 is armv8.(N+5)-a.
        major, minor = V9_BASE[f"9.{minor}"].split(".")
    parts = ["generic"] if (major, minor) == ("8", "0") else [f"generic+v{major}_{minor}a"]
    for ext in extensions:
        if ext.startswith("no"):
            parts.append("-" + _FEATURE_NAMES.get(ext[2:], ext[2:]))
        else:
            parts.append("+" + _FEATURE_NAMES.get(ext, ext))
    return parts[0] + "".join(parts[1:])


# What a compiler invocation compiles (besides -c/-S/-E): a source file among its inputs.
_SOURCE = re.compile(r"\.(?:c|cc|cp|cpp|cxx|c\+\+|C|m|mm|s|S|sx)$")


def links_only(args: Sequence[str]) -> bool:
    """Does this invocation only link (no -c/-S/-E, no source file among its arguments)?"""
    if any(arg in ("-c", "-S", "-E") for arg in args):
        return False
    return not any(_SOURCE.search(arg) for arg in args if not arg.startswith("-"))


def translate_args(args: Sequence[str]) -> list[str]:
    """Rewrite GCC-only flags for zig; keep the order of everything else.

    A link drops ``-march``: when linking, zig's ``-mcpu`` only selects the CPU zig compiles its own runtime
    (compiler_rt, libc++, libunwind) for, from source, once per CPU. CMake passes ``-march`` to a link only in
    try_compile checks (ggml's ARM feature checks, CMAKE_REQUIRED_FLAGS), never for a shipped library, so every
    variant's check cost a full runtime build on an empty zig cache. Linked for the target's default CPU, the
    runtime is the baseline one every library gets; the objects keep their -march code."""
    out: list[str] = []
    link = links_only(args)
    for arg in args:
        if arg == "-bundle":
            # Apple's loadable bundle: how CMake links a MODULE library on Darwin (ggml's GGML_BACKEND_DL
            # backends and CPU variants). zig cannot link MH_BUNDLE: it ignores -bundle and links an executable
            # ("undefined symbol: _main"). A dylib loads through dlopen() alike; its install name is
            # @rpath/<file name>, as CMake gives a SHARED library, never the build path zig would record.
            if "-o" not in args[:-1]:
                raise UnsupportedFlag("-bundle without -o FILE: the dylib's install name cannot be set")
            output = args[args.index("-o") + 1]
            out += ["-dynamiclib", f"-Wl,-install_name,@rpath/{os.path.basename(output)}"]
        elif arg.startswith("-march="):
            mcpu = translate_march(arg.removeprefix("-march="))  # checked on links too
            if not link:
                out.append("-mcpu=" + mcpu)
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
