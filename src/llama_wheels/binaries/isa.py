"""Which AArch64 ISA features a code object's instructions need: capstone decodes, LLVM's predicates classify.

Every executable section of an ELF or Mach-O file is disassembled with capstone 6 (pinned in pyproject.toml),
whose AArch64 tables are generated from LLVM's and carry each instruction's feature predicates (``HasDotProd``,
``HasSVE2orSME``, ...). No instruction table is written here: the predicate names are mapped to our feature
names (``_PREDICATES``), and only the few system-register forms LLVM leaves without a predicate (SME's
``smstart``/``smstop`` and its registers) get a rule of their own. A predicate not in the map is reported under
its own lower-cased name, so an extension nobody expected is shown, never dropped.

AArch64 instructions are 32 bits wide and what they need depends on the word alone, so each distinct word is
decoded once per process (``_Decoder``); per-feature counts are counts of words.

Feature names: ours are those of build_config/cpus.toml (dotprod, fp16, i8mm, sve, sve2, sme); the others
are LLVM's ``-mattr`` names (lse, rcpc, crc, aes, sha2, ...). ``fp16`` means FP16 *arithmetic*
(FEAT_FP16): conversions and loads of half floats are armv8.0.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import capstone
import numpy as np
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection
from macholib import mach_o
from macholib.MachO import MachO

# LLVM's AArch64 predicates -> feature names. NEON and FP are the armv8-a baseline of every AArch64 ABI.
_BASELINE_PREDICATES = frozenset({"HasNEON", "HasFPARMv8", "HasNEONorSME"})
_PREDICATES = {
    "HasDotProd": "dotprod", "HasMatMulInt8": "i8mm", "HasFullFP16": "fp16", "HasBF16": "bf16",
    "HasSVE": "sve", "HasSVEorSME": "sve", "HasSVE2": "sve2", "HasSVE2orSME": "sve2",
    "HasSME": "sme", "HasSME2": "sme2",
    "HasLSE": "lse", "HasRCPC": "rcpc", "HasRCPC_IMMO": "rcpc-immo", "HasCRC": "crc", "HasRDM": "rdm",
    "HasAES": "aes", "HasSHA2": "sha2", "HasSHA3": "sha3", "HasSM4": "sm4", "HasFP16FML": "fp16fml",
    "HasComplxNum": "complxnum", "HasJS": "jsconv", "HasFRInt3264": "frintts", "HasFlagM": "flagm",
    "HasAltNZCV": "altnzcv", "HasPAuth": "pauth", "HasMTE": "mte", "HasSB": "sb", "HasWFxT": "wfxt",
    "HasMatMulFP32": "f32mm", "HasMatMulFP64": "f64mm", "HasMOPS": "mops", "HasLS64": "ls64",
}
# SME's mode switches and registers are MSR/MRS forms to which LLVM attaches no predicate.
_SME_SYSREG = re.compile(r"^(smstart|smstop)\b|^(mrs|msr)\b.*\b(SVCR\w*|TPIDR2_EL0|SMCR_EL\w+|SMPRI\w*|SMIDR_EL1)\b",
                         re.IGNORECASE)
UNDECODED = "undecoded"  # a word in an executable section capstone cannot decode: never allowed


@dataclass(frozen=True, kw_only=True)
class Instruction:
    word: int
    text: str  # mnemonic and operands as decoded at address 0 (branch targets are relative)
    mnemonic: str
    features: frozenset[str]  # empty: armv8-a


class _Decoder:
    """capstone, with each distinct 32-bit word decoded (with LLVM's predicates) once."""

    def __init__(self) -> None:
        self._cs = capstone.Cs(capstone.CS_ARCH_AARCH64, capstone.CS_MODE_ARM)
        self._cs.detail = True
        self._cs.skipdata = True
        self._known: dict[int, Instruction] = {}
        self._group_names: dict[int, str] = {}

    def decode(self, words: Iterable[int]) -> dict[int, Instruction]:
        """The instruction of every word in ``words`` (little-endian AArch64 encodings)."""
        wanted = sorted(set(words))
        new = [w for w in wanted if w not in self._known]
        if new:
            blob = struct.pack(f"<{len(new)}I", *new)
            for insn in self._cs.disasm(blob, 0):
                word = new[insn.address // 4]
                self._known[word] = self._instruction(word, insn)
        return {w: self._known[w] for w in wanted}

    def _instruction(self, word: int, insn: capstone.CsInsn) -> Instruction:
        if insn.id == 0 or insn.size != 4:  # skipdata: not an instruction capstone knows
            return Instruction(word=word, text=f".inst {word:#010x}", mnemonic=".inst",
                               features=frozenset({UNDECODED}))
        text = f"{insn.mnemonic} {insn.op_str}".strip()
        features = set()
        for group in insn.groups:
            name = self._group_names.get(group)
            if name is None:
                name = self._group_names[group] = self._cs.group_name(group) or ""
            if name.startswith("Has") and name not in _BASELINE_PREDICATES:
                features.add(_PREDICATES.get(name, name.removeprefix("Has").lower()))
        if _SME_SYSREG.search(text):
            features.add("sme")
        return Instruction(word=word, text=text, mnemonic=insn.mnemonic, features=frozenset(features))


_DECODER: _Decoder | None = None


def decode_words(words: Iterable[int]) -> dict[int, Instruction]:
    """The instruction (text, needed features) of each distinct word; one decoder per process."""
    global _DECODER
    if _DECODER is None:
        _DECODER = _Decoder()
    return _DECODER.decode(words)


@dataclass(frozen=True, kw_only=True)
class CodeSection:
    name: str  # ".text", "__TEXT,__text"
    address: int  # virtual address of its first byte
    offset: int  # file offset of its first byte
    words: np.ndarray  # uint32, little endian


@dataclass(frozen=True, kw_only=True)
class CodeObject:
    path: str
    machine: str  # pyelftools' e_machine (EM_AARCH64), or for Mach-O the audited slices' CPU type (ARM64)
    sections: tuple[CodeSection, ...]
    data: bytes = field(repr=False)  # the file

    @cached_property
    def symbols(self) -> tuple[tuple[int, int, str], ...]:
        """(address, size, name) of every defined function symbol (``.symtab`` and ``.dynsym``), sorted; read
        only when asked (thousands of dynamic symbols; the audit needs them for a violation only)."""
        if not self.data.startswith(b"\x7fELF"):
            return ()
        symbols: set[tuple[int, int, str]] = set()
        for table in ELFFile(io.BytesIO(self.data)).iter_sections():
            if isinstance(table, SymbolTableSection):
                symbols |= {(sym["st_value"], sym["st_size"], sym.name) for sym in table.iter_symbols()
                            if sym["st_info"]["type"] == "STT_FUNC" and sym["st_shndx"] != "SHN_UNDEF"}
        return tuple(sorted(symbols))


def _section(name: str, address: int, offset: int, data: bytes) -> CodeSection:
    return CodeSection(name=name, address=address, offset=offset,
                       words=np.frombuffer(data[: len(data) // 4 * 4], dtype="<u4"))


def elf_code(path: str, data: bytes) -> CodeObject:
    """The executable sections of an ELF file (and, on demand, its function symbols)."""
    elf = ELFFile(io.BytesIO(data))
    sections = tuple(_section(s.name, s["sh_addr"], s["sh_offset"], s.data()) for s in elf.iter_sections()
                     if s["sh_flags"] & SH_FLAGS.SHF_EXECINSTR and s["sh_type"] != "SHT_NOBITS")
    return CodeObject(path=path, machine=elf["e_machine"], sections=sections, data=data)


_CODE_FLAGS = 0x80000000 | 0x400  # S_ATTR_PURE_INSTRUCTIONS | S_ATTR_SOME_INSTRUCTIONS


def macho_code(path: str, data: bytes, *, file: str) -> CodeObject:
    """The code sections of every arm64 slice of a Mach-O file (``file``: the same bytes on disk)."""
    sections = []
    archs = []
    for header in MachO(file, allow_unknown_load_commands=True).headers:
        archs.append(mach_o.CPU_TYPE_NAMES.get(header.header.cputype, hex(header.header.cputype)))
        if archs[-1] != "ARM64":
            continue
        for load, _cmd, payload in header.commands:
            if load.cmd != mach_o.LC_SEGMENT_64:
                continue
            for sect in payload:
                if sect.flags & _CODE_FLAGS and sect.size:
                    start = header.offset + sect.offset
                    segment, section = (bytes(n).rstrip(b"\0").decode() for n in (sect.segname, sect.sectname))
                    name = f"{segment},{section}"
                    sections.append(_section(name, sect.addr, start, data[start:start + sect.size]))
    machine = "ARM64" if "ARM64" in archs else "+".join(archs)
    return CodeObject(path=path, machine=machine, sections=tuple(sections), data=data)


@dataclass(frozen=True, kw_only=True)
class Site:
    """One instruction in a code object."""

    section: str
    address: int
    offset: int  # in the file
    index: int  # word index in its section
    instruction: Instruction


def feature_counts(code: CodeObject) -> tuple[Counter[str], int]:
    """Instructions per needed feature of ``code`` (baseline ones not counted), and the instruction total."""
    counts: Counter[str] = Counter()
    total = 0
    for section in code.sections:
        words, occurrences = np.unique(section.words, return_counts=True)
        decoded = decode_words(words.tolist())
        for word, n in zip(words.tolist(), occurrences.tolist(), strict=True):
            for feature in decoded[word].features:
                counts[feature] += n
        total += len(section.words)
    return counts, total


def sites_needing(code: CodeObject, features: frozenset[str]) -> list[Site]:
    """Every instruction of ``code`` that needs one of ``features``."""
    found = []
    for section in code.sections:
        words = np.unique(section.words).tolist()
        decoded = decode_words(words)
        bad = np.array([w for w in words if decoded[w].features & features], dtype="<u4")
        for index in np.flatnonzero(np.isin(section.words, bad)).tolist():
            found.append(Site(section=section.name, address=section.address + 4 * index,
                              offset=section.offset + 4 * index, index=index,
                              instruction=decoded[int(section.words[index])]))
    return found


def enclosing_symbol(code: CodeObject, address: int) -> str | None:
    """The function symbol whose extent holds ``address`` (with ``+0x..``), when the file names one."""
    best = None
    for start, size, name in code.symbols:
        if start <= address < start + max(size, 4):
            best = f"{name}+{address - start:#x}"
    return best


# Code of the toolchain's runtime that uses a feature beyond the baseline only behind a run-time check, and so
# is legitimately in every library. Recognized by what the function *is*, not by the feature: the instruction
# sits at the recorded position of a window whose instruction sequence (mnemonics) is exactly the recorded
# function of the pinned zig's runtime, as many instructions long (tests/unit/test_isa.py links that runtime and checks
# this table against its symbols). The wheels are stripped, so the name cannot be read from the library itself.
@dataclass(frozen=True, kw_only=True)
class GuardedFunction:
    name: str
    length: int  # instructions
    mnemonics_sha256: str  # of the mnemonics joined by single spaces
    sites: tuple[tuple[int, str], ...]  # (instruction index, text) of each instruction beyond armv8-a
    guard: str  # why it never runs on a CPU without the feature


# lld rewrites address materialization by distance (adrp+add -> nop+adr, adrp+ldr -> nop+ldr literal), so
# the instructions it may rewrite do not count in a function's identity; every other mnemonic does, in order.
_RELAXABLE = frozenset({"adrp", "adr", "add", "ldr", "nop"})


def mnemonics_digest(mnemonics: Sequence[str]) -> str:
    """sha256 of a function's mnemonics, in order, without those the linker may rewrite (``_RELAXABLE``)."""
    return hashlib.sha256(" ".join(m for m in mnemonics if m not in _RELAXABLE).encode()).hexdigest()


_LIBUNWIND_VG = ("libunwind (zig's, statically linked): reads the SVE vector granule with `cntd` only when "
                 "unwinding a frame whose CFI uses the VG register, which only SVE code has")
_LIBUNWIND_MTE_VG = (_LIBUNWIND_VG + "; tags the stack with `stg` only for frames whose CIE has the 'G' (MTE) "
                     "augmentation, which only MTE-enabled code has")
_LIBUNWIND_ZA = ("libunwind's __arm_za_disable (SME lazy save, assembly): called only when Registers_arm64 found "
                 "SME at run time (getauxval(AT_HWCAP2) & HWCAP2_SME, `_misc_registers.__has_sme`)")
# (symbol, instructions, sha256 of the mnemonics, why it is guarded, (index, text) of each instruction beyond armv8-a)
_GUARDED_ROWS: tuple[tuple[str, int, str, str, tuple[tuple[int, str], ...]], ...] = (
    ("_ZN9libunwind12UnwindCursorINS_17LocalAddressSpaceENS_15Registers_arm64EE6getRegEi",
     64, "4bb8b01dddf169f40b170bb36f73a08ac0b739706bc8e2c1d0c80355dd63dc34", _LIBUNWIND_VG,
     ((43, "cntd x0"),)),
    ("_ZN9libunwind17DwarfInstructionsINS_17LocalAddressSpaceENS_15Registers_arm64EE13stepWithDwarfERS1_RKmmRS2_Rbb",
     265, "1dc6553a423490893a0fa9b0d82dc9f2a1dfa341149bc8058cbfeb00b5723f28", _LIBUNWIND_MTE_VG,
     ((45, "stg x8, [x8]"), (138, "cntd x0"))),
    ("_ZN9libunwind17DwarfInstructionsINS_17LocalAddressSpaceENS_15Registers_arm64EE6getCFAERS1_RKNS_10CFI_ParserIS1_E10PrologInfoERKS2_",
     67, "cba95e0db320f792a98332bb7f57ce6d07176bd90c82acb0366c61ee5763ad46", _LIBUNWIND_VG,
     ((37, "cntd x0"),)),
    ("_ZN9libunwind17DwarfInstructionsINS_17LocalAddressSpaceENS_15Registers_arm64EE16getSavedRegisterERS1_RKS2_mRKNS_10CFI_ParserIS1_E16RegisterLocationE",
     105, "d5f407fc83de06a9b466083c0a45eb55b5685e3c68ea9ca360211557f06cd24e", _LIBUNWIND_VG,
     ((68, "cntd x0"),)),
    ("_ZN9libunwind17DwarfInstructionsINS_17LocalAddressSpaceENS_15Registers_arm64EE18evaluateExpressionEmRS1_RKS2_m",
     536, "6551d488293f0be78176e0764a30d29c44046c30156ef239bbed45938af5a29b", _LIBUNWIND_VG,
     ((105, "cntd x0"), (419, "cntd x0"), (441, "cntd x0"))),
    ("__libunwind_Registers_arm64_za_disable",
     20, "0cd682508d27465dd16381c58875a2fd8033d5e05a2e2f3a180e886c8bfd1e31", _LIBUNWIND_ZA,
     ((0, "mrs x16, TPIDR2_EL0"), (11, "str za[w15, 0], [x16]"), (12, "addsvl x16, x16, #1"),
      (16, "msr TPIDR2_EL0, xzr"), (17, "smstop za"))),
)
# The same functions as zig compiles libunwind for aarch64-linux-musl (linux-aarch64-musl): one instruction longer
# each, the same sites and guards (__libunwind_Registers_arm64_za_disable, assembly, is the same): (length, sha256).
_MUSL_IDENTITIES = {
    "_ZN9libunwind12UnwindCursorINS_17LocalAddressSpaceENS_15Registers_arm64EE6getRegEi":
        (65, "22c434661eec08dd5900de511be52709d15222d02f75dca14b37c84915b53849"),
    "_ZN9libunwind17DwarfInstructionsINS_17LocalAddressSpaceENS_15Registers_arm64EE13stepWithDwarfERS1_RKmmRS2_Rbb":
        (266, "9245296f1c21adfcd4cfc1a9accbf359301e7c20b2fbbb2a1f49c3420612dea8"),
    "_ZN9libunwind17DwarfInstructionsINS_17LocalAddressSpaceENS_15Registers_arm64EE6getCFAERS1_RKNS_10CFI_ParserIS1_E10PrologInfoERKS2_":
        (68, "4430e2a2299311fa0e5031728dc4a5a6bcbc0da61cb9598cfe86124671e34305"),
    "_ZN9libunwind17DwarfInstructionsINS_17LocalAddressSpaceENS_15Registers_arm64EE16getSavedRegisterERS1_RKS2_mRKNS_10CFI_ParserIS1_E16RegisterLocationE":
        (106, "3537574facfc3763dd034c86bfa9a1f81f9d44c42311e4b07509ba72464c3323"),
    "_ZN9libunwind17DwarfInstructionsINS_17LocalAddressSpaceENS_15Registers_arm64EE18evaluateExpressionEmRS1_RKS2_m":
        (537, "1b0dc1713af871e0789d229a2876f3c24dc6eb617d214108f3c5249372f0d3bf"),
}
_GUARDED_ROWS += tuple((name, *_MUSL_IDENTITIES[name], guard, sites)
                       for name, _, _, guard, sites in _GUARDED_ROWS if name in _MUSL_IDENTITIES)
RUNTIME_GUARDED = tuple(GuardedFunction(name=name, length=length, mnemonics_sha256=digest, guard=guard, sites=sites)
                        for name, length, digest, guard, sites in _GUARDED_ROWS)


def functions_beyond_baseline(code: CodeObject) -> list[GuardedFunction]:
    """Every named function of ``code`` (an unstripped build) with an instruction beyond armv8-a, as a
    ``GuardedFunction`` without its ``guard``: how ``RUNTIME_GUARDED`` is made and checked."""
    found = []
    starts = sorted({start for start, _, _ in code.symbols})
    for start, size, name in code.symbols:
        section = next((s for s in code.sections if s.address <= start < s.address + 4 * len(s.words)), None)
        if section is None:
            continue
        if not size:  # an assembly function without .size: up to the next symbol
            size = next((a for a in starts if a > start), section.address + 4 * len(section.words)) - start
        first = (start - section.address) // 4
        window = section.words[first:first + size // 4].tolist()
        decoded = decode_words(window)
        sites = tuple((i, decoded[w].text) for i, w in enumerate(window) if decoded[w].features)
        if sites:
            found.append(GuardedFunction(name=name, length=len(window), sites=sites, guard="",
                                         mnemonics_sha256=mnemonics_digest([decoded[w].mnemonic for w in window])))
    return found


def guarded_by_runtime(code: CodeObject, site: Site) -> GuardedFunction | None:
    """The runtime-guarded function (``RUNTIME_GUARDED``) ``site`` is part of, if any."""
    section = next(s for s in code.sections if s.name == site.section)
    for function in RUNTIME_GUARDED:
        for position, text in function.sites:
            start = site.index - position
            if text != site.instruction.text or start < 0 or start + function.length > len(section.words):
                continue
            window = section.words[start:start + function.length].tolist()
            decoded = decode_words(window)
            if mnemonics_digest([decoded[w].mnemonic for w in window]) == function.mnemonics_sha256:
                return function
    return None
