"""The import guard the patches ship (llama_cpp/_backends.py) against llama-wheels' own tables.

The guard must stay standalone inside the wheel, so it carries copies: of the hwcap bits (held equal here to
standalone/hostcpu.py's HWCAPS, the one table) and of the oracle's reading of an -march. The ISA audit allows
a fixed-ISA library only the features the guard verifies, so whatever the -march implies and the guard does
not check can never reach a CPU that lacks it. Read from the patch files themselves: no build needed.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from llama_wheels import oracle
from llama_wheels.standalone import hostcpu
from tests.support.checkout import REPO

GUARD_PATCHES = sorted(path for path in (REPO / "patches").glob("*/*.patch")
                       if "+++ b/llama_cpp/_backends.py\n" in path.read_text())
# The features a Cortex-A76 (Raspberry Pi 5) reports (armv8.2-a with dotprod, fp16, RCpc; no FCMA, JSCVT,
# FlagM, PAuth, LRCPC2), as qemu's cortex-a76 model gives them (tests/integration/emulated/test_matrix.py
# measures it).
CORTEX_A76 = frozenset({"aes", "sha2", "crc", "lse", "fp16", "rdm", "rcpc", "dotprod"})
ISAS = ("armv8-a", "armv8.1-a", "armv8.2-a+dotprod", "armv8.2-a+dotprod+fp16", "armv8.3-a", "armv8.4-a",
        "armv8.5-a", "armv8.6-a", "armv8.6-a+nobf16", "armv8.7-a", "armv8.9-a", "armv9-a", "armv9-a+nosve",
        "armv9.2-a", "armv9.2-a+sme", "armv8.2-a+sve2", "armv8.2-a+sve+nofp16", "armv8.2-a+i8mm+nodotprod",
        "armv9.4-a+nosve2", "armv8-a+crypto", "armv8.2-a+fp16fml", "armv8-a+rdma", "armv8.2-a+sha3+sm4")


def shipped_guard(patch: Path) -> ModuleType:
    """llama_cpp/_backends.py as ``patch`` creates it, loaded as a module."""
    text = patch.read_text()
    section = text.split("+++ b/llama_cpp/_backends.py\n", 1)[1]
    hunk = re.match(r"@@ -0,0 \+1,(\d+) @@\n", section)
    assert hunk, f"{patch.name}: llama_cpp/_backends.py is not created by one hunk"
    lines = section[hunk.end():].splitlines(keepends=True)[:int(hunk[1])]
    assert all(line.startswith("+") for line in lines), f"{patch.name}: the hunk is shorter than its header says"
    spec = importlib.util.spec_from_loader(f"guard_{patch.parent.name}", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile("".join(line[1:] for line in lines), f"{patch}:llama_cpp/_backends.py", "exec"), module.__dict__)
    return module


def have(features: frozenset[str]) -> dict[str, bool]:
    return {name: name in features for name in hostcpu.HWCAPS}


def test_the_patches_that_ship_a_guard_are_found() -> None:
    assert {path.parent.name for path in GUARD_PATCHES} >= {"0.3.36", "0.3.4"}


@pytest.mark.parametrize("patch", GUARD_PATCHES, ids=lambda p: f"{p.parent.name}/{p.name[:4]}")
def test_every_shipped_guard_carries_the_one_hwcap_table(patch: Path) -> None:
    guard = shipped_guard(patch)
    assert (guard._AT_HWCAP, guard._AT_HWCAP2) == (hostcpu.AT_HWCAP, hostcpu.AT_HWCAP2)
    assert dict(hostcpu.HWCAPS) == guard._ARM_HWCAPS


@pytest.mark.parametrize("patch", GUARD_PATCHES, ids=lambda p: f"{p.parent.name}/{p.name[:4]}")
def test_every_shipped_guard_reads_an_isa_as_the_oracle_does(patch: Path) -> None:
    """All that an -march lets the compiler use and a hwcap can show, not only ggml's features."""
    guard = shipped_guard(patch)
    for isa in ISAS:
        assert set(guard.isa_features(isa)) == oracle.instruction_features(isa) & set(hostcpu.HWCAPS), isa
    with pytest.raises(ImportError, match=r"names no armvX\.Y-a architecture"):
        guard.isa_features("x86-64-v3")
    with pytest.raises(ImportError, match=r"an architecture level this check does not know"):
        guard.isa_features("armv9.5-a")


@pytest.mark.parametrize("patch", GUARD_PATCHES, ids=lambda p: f"{p.parent.name}/{p.name[:4]}")
def test_an_armv8_4_wheel_is_refused_on_a_cortex_a76(patch: Path) -> None:
    """The fixed-ISA gap: armv8.4-a implies dotprod, which the A76 has, and FCMA, JSCVT, FlagM, LRCPC2 and
    PAuth, which it lacks. A guard that checks only ggml's features lets the wheel import there, and its
    code may die of SIGILL; this one refuses it. The wheel the project ships for that CPU still imports."""
    guard = shipped_guard(patch)
    assert guard.missing_features("armv8.4-a", have(CORTEX_A76)) == [
        "complxnum", "flagm", "jsconv", "pauth", "rcpc-immo"]
    assert guard.missing_features("armv8.2-a+dotprod", have(CORTEX_A76)) == []
    assert guard.missing_features("armv8.2-a+dotprod", have(CORTEX_A76 - {"lse"})) == ["lse"]
