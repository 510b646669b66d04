"""The ISA classifier (binaries/isa.py) on code the pinned zig assembles and links here: one instruction per
feature, every one decoded and classified; the runtime-guarded table against the pinned zig's runtime."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from llama_wheels.binaries import isa
from tests.support.zig import zig_env


def zig_runtime(tmp_path: Path, target: str) -> isa.CodeObject:
    """An unstripped C++ library zig links for ``target``: its libunwind, as every library of a wheel has it."""
    source = tmp_path / "ref.cpp"
    source.write_text('#include <stdexcept>\nextern "C" int ref(int x) { try { if (x) throw std::runtime_error("x"); }'
                      " catch (const std::exception&) { return 1; } return 0; }\n")
    lib = tmp_path / f"libref-{target}.so"
    subprocess.run([sys.executable, "-m", "ziglang", "c++", "-target", target, "-shared", "-fPIC",
                    "-O2", str(source), "-o", str(lib)], check=True, capture_output=True, env=zig_env(), timeout=900)
    return isa.elf_code(lib.name, lib.read_bytes())


def test_runtime_guarded_table_is_the_pinned_zig_runtime(tmp_path: Path) -> None:
    """RUNTIME_GUARDED names functions of the libunwind zig links into every C++ library; its identities must be
    those of the pinned zig's, read here from unstripped links for glibc and for musl (zig compiles libunwind
    per libc), and it must cover all of that runtime's code beyond armv8-a (a new zig with new such code fails
    here, not in the audit of a release)."""
    codes = [zig_runtime(tmp_path, target) for target in ("aarch64-linux-gnu.2.17", "aarch64-linux-musl")]
    found = [isa.functions_beyond_baseline(code) for code in codes]
    assert {replace(f, guard="") for f in isa.RUNTIME_GUARDED} == set(found[0]) | set(found[1])
    for code, identity in ((c, f) for c, fs in zip(codes, found, strict=True) for f in fs):
        [function] = [g for g in isa.RUNTIME_GUARDED if replace(g, guard="") == identity]
        start = next(a for a, _, n in code.symbols if n == function.name)
        section = code.sections[[s.name for s in code.sections].index(".text")]
        for position, _ in function.sites:
            index = (start - section.address) // 4 + position
            [site] = [s for s in isa.sites_needing(code, frozenset(isa._PREDICATES.values()) | {"sme"})
                      if s.index == index and s.section == ".text"]
            assert isa.guarded_by_runtime(code, site) == function

