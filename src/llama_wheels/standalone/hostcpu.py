"""The ARM CPU features of the machine this Python runs on, read the way ggml's CPU backend reads them.

Standalone (standard library only): like ``models.py`` it is shipped next to the wheel tests (cibuildwheel's
native test run, the emulated guests), and ``python hostcpu.py`` prints the reading as one JSON line, which
is how the test bed measures an emulated CPU. Where it cannot tell, it raises ``UnknownHost`` naming what is
missing: a wrong guess here would turn every expectation derived from it into a wrong verdict.

- Linux: the ELF auxiliary vector (``getauxval(AT_HWCAP)``, ``getauxval(AT_HWCAP2)``) and, with SVE, the
  vector length (``prctl(PR_SVE_GET_VL)``), as ggml-feats.h does at the pinned llama.cpp: fp16 counts only
  with both FPHP and ASIMDHP (scalar and vector half-precision arithmetic).
- macOS: ``sysctl hw.optional.arm.FEAT_*`` (Apple silicon has no SVE; a key the OS lacks means "no").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass

# The features ggml's ARM variants and repack rules are built around, in ggml's score order, and bf16.
FEATURES = ("dotprod", "fp16", "sve", "i8mm", "sve2", "sme", "bf16")
ARM_MACHINES = ("aarch64", "arm64")

# Linux uapi asm/hwcap.h (arm64) and prctl.h.
AT_HWCAP, AT_HWCAP2 = 16, 26
PR_SVE_GET_VL, PR_SVE_VL_LEN_MASK = 51, 0xFFFF
# THE table of hwcap bits: per instruction feature (the names of oracle.LEVEL_ADDS and binaries/isa.py), the
# auxv word and the bits that must all be set (uapi names in the comments). The import checks the patches
# ship (llama_cpp/_backends.py, standalone in the wheel) carry a copy that tests/unit/test_hostcpu.py holds
# to this one, and the ISA audit allows a fixed-ISA library only the features its import check verifies.
# fp16 is FP16 arithmetic, scalar and vector, as ggml counts it.
HWCAPS: Mapping[str, tuple[int, int]] = {
    "aes": (AT_HWCAP, 1 << 3 | 1 << 4),  # AES, PMULL
    "sha2": (AT_HWCAP, 1 << 5 | 1 << 6),  # SHA1, SHA2
    "crc": (AT_HWCAP, 1 << 7),  # CRC32
    "lse": (AT_HWCAP, 1 << 8),  # ATOMICS
    "fp16": (AT_HWCAP, 1 << 9 | 1 << 10),  # FPHP, ASIMDHP
    "rdm": (AT_HWCAP, 1 << 12),  # ASIMDRDM
    "jsconv": (AT_HWCAP, 1 << 13),  # JSCVT
    "complxnum": (AT_HWCAP, 1 << 14),  # FCMA
    "rcpc": (AT_HWCAP, 1 << 15),  # LRCPC
    "sha3": (AT_HWCAP, 1 << 17 | 1 << 21),  # SHA3, SHA512
    "sm4": (AT_HWCAP, 1 << 18 | 1 << 19),  # SM3, SM4
    "dotprod": (AT_HWCAP, 1 << 20),  # ASIMDDP
    "sve": (AT_HWCAP, 1 << 22),  # SVE
    "fp16fml": (AT_HWCAP, 1 << 23),  # ASIMDFHM
    "rcpc-immo": (AT_HWCAP, 1 << 26),  # ILRCPC
    "flagm": (AT_HWCAP, 1 << 27),  # FLAGM
    "sb": (AT_HWCAP, 1 << 29),  # SB
    "pauth": (AT_HWCAP, 1 << 30 | 1 << 31),  # PACA, PACG
    "sve2": (AT_HWCAP2, 1 << 1),  # SVE2
    "altnzcv": (AT_HWCAP2, 1 << 7),  # FLAGM2
    "frintts": (AT_HWCAP2, 1 << 8),  # FRINT
    "f32mm": (AT_HWCAP2, 1 << 10),  # SVEF32MM
    "f64mm": (AT_HWCAP2, 1 << 11),  # SVEF64MM
    "i8mm": (AT_HWCAP2, 1 << 13),  # I8MM
    "bf16": (AT_HWCAP2, 1 << 14),  # BF16
    "mte": (AT_HWCAP2, 1 << 18),  # MTE
    "sme": (AT_HWCAP2, 1 << 23),  # SME
    "wfxt": (AT_HWCAP2, 1 << 31),  # WFXT
    "sme2": (AT_HWCAP2, 1 << 37),  # SME2
    "mops": (AT_HWCAP2, 1 << 43),  # MOPS
}
# macOS sysctl names per feature (fp16: FEAT_FP16 is the half-precision arithmetic of ARMv8.2).
SYSCTL = {"dotprod": "hw.optional.arm.FEAT_DotProd", "fp16": "hw.optional.arm.FEAT_FP16",
          "sve": "hw.optional.arm.FEAT_SVE", "i8mm": "hw.optional.arm.FEAT_I8MM",
          "sve2": "hw.optional.arm.FEAT_SVE2", "sme": "hw.optional.arm.FEAT_SME",
          "bf16": "hw.optional.arm.FEAT_BF16"}


class UnknownHost(RuntimeError):
    """This machine's ARM features cannot be read; the message says why and what would help."""


@dataclass(frozen=True)
class HostCpu:
    machine: str  # platform.machine(): aarch64 | arm64
    features: frozenset[str]  # a subset of FEATURES
    sve_bits: int  # the SVE vector length this process runs with; 0 without SVE

    def to_json(self) -> str:
        return json.dumps({"machine": self.machine, "features": sorted(self.features), "sve_bits": self.sve_bits})

    @classmethod
    def from_json(cls, text: str) -> HostCpu:
        data = json.loads(text)
        unknown = set(data["features"]) - set(FEATURES)
        if unknown:
            raise UnknownHost(f"unknown CPU features {sorted(unknown)} in {text!r}")
        return cls(machine=data["machine"], features=frozenset(data["features"]), sve_bits=int(data["sve_bits"]))


def hwcap_features(hwcap: int, hwcap2: int) -> frozenset[str]:
    """Linux: every feature of HWCAPS the two hwcap words say this CPU has."""
    words = {AT_HWCAP: hwcap, AT_HWCAP2: hwcap2}
    return frozenset(name for name, (word, bits) in HWCAPS.items() if words[word] & bits == bits)


def from_hwcaps(hwcap: int, hwcap2: int, sve_vl: int) -> tuple[frozenset[str], int]:
    """Linux: the features (of FEATURES) and SVE bits from the two hwcap words and prctl(PR_SVE_GET_VL)'s
    result."""
    has = hwcap_features(hwcap, hwcap2) & frozenset(FEATURES)
    sve_bits = (sve_vl & PR_SVE_VL_LEN_MASK) * 8 if "sve" in has and sve_vl > 0 else 0
    return has, sve_bits


def from_sysctl(values: Mapping[str, int]) -> frozenset[str]:
    """macOS: the features whose ``hw.optional.arm.FEAT_*`` value is non-zero (absent = not present)."""
    return frozenset(name for name, key in SYSCTL.items() if values.get(key, 0))


def _linux() -> tuple[frozenset[str], int]:
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "getauxval"):
        raise UnknownHost("this C library has no getauxval(): the CPU's hwcaps cannot be read")
    libc.getauxval.restype = ctypes.c_ulong
    libc.getauxval.argtypes = [ctypes.c_ulong]
    hwcap, hwcap2 = libc.getauxval(AT_HWCAP), libc.getauxval(AT_HWCAP2)
    if hwcap == 0:
        raise UnknownHost("getauxval(AT_HWCAP) is 0: the kernel (or emulator) reports no CPU features at all")
    libc.prctl.restype = ctypes.c_int
    has_sve = "sve" in hwcap_features(hwcap, hwcap2)
    sve_vl = libc.prctl(PR_SVE_GET_VL, 0, 0, 0, 0) if has_sve else -1
    if has_sve and sve_vl <= 0:
        raise UnknownHost("the CPU has SVE but prctl(PR_SVE_GET_VL) gives no vector length")
    return from_hwcaps(hwcap, hwcap2, sve_vl)


def _macos() -> frozenset[str]:
    path = ctypes.util.find_library("c")
    if path is None:
        raise UnknownHost("libc not found: sysctlbyname() cannot be called")
    libc = ctypes.CDLL(path)
    values = {}
    for key in SYSCTL.values():
        value, size = ctypes.c_int(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_int))
        if libc.sysctlbyname(key.encode(), ctypes.byref(value), ctypes.byref(size), None, 0) == 0:
            values[key] = value.value
    if "hw.optional.arm.FEAT_DotProd" not in values:
        raise UnknownHost("sysctl hw.optional.arm.FEAT_DotProd is missing: macOS 12 or newer reports it")
    return from_sysctl(values)


def read() -> HostCpu:
    """This machine's ARM CPU, or ``UnknownHost`` when it is not an ARM machine this module can read."""
    machine = platform.machine().lower()
    if machine not in ARM_MACHINES:
        raise UnknownHost(f"{machine or 'this machine'} is not an ARM CPU; its ARM features mean nothing")
    if sys.platform.startswith("linux"):
        features, sve_bits = _linux()
        return HostCpu(machine=machine, features=features, sve_bits=sve_bits)
    if sys.platform == "darwin":
        return HostCpu(machine=machine, features=_macos(), sve_bits=0)
    raise UnknownHost(f"reading ARM CPU features on {sys.platform} is not supported (Linux and macOS are)")


if __name__ == "__main__":
    print("HOSTCPU " + read().to_json())
