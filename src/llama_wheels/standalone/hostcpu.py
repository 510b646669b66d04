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
HWCAP_BITS = {"fphp": 1 << 9, "asimdhp": 1 << 10, "asimddp": 1 << 20, "sve": 1 << 22}
HWCAP2_BITS = {"sve2": 1 << 1, "i8mm": 1 << 13, "bf16": 1 << 14, "sme": 1 << 23}
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


def from_hwcaps(hwcap: int, hwcap2: int, sve_vl: int) -> tuple[frozenset[str], int]:
    """Linux: the features and SVE bits from the two hwcap words and prctl(PR_SVE_GET_VL)'s result."""
    has = {
        "dotprod": bool(hwcap & HWCAP_BITS["asimddp"]),
        "fp16": bool(hwcap & HWCAP_BITS["fphp"]) and bool(hwcap & HWCAP_BITS["asimdhp"]),
        "sve": bool(hwcap & HWCAP_BITS["sve"]),
        "i8mm": bool(hwcap2 & HWCAP2_BITS["i8mm"]),
        "sve2": bool(hwcap2 & HWCAP2_BITS["sve2"]),
        "sme": bool(hwcap2 & HWCAP2_BITS["sme"]),
        "bf16": bool(hwcap2 & HWCAP2_BITS["bf16"]),
    }
    sve_bits = (sve_vl & PR_SVE_VL_LEN_MASK) * 8 if has["sve"] and sve_vl > 0 else 0
    return frozenset(name for name, on in has.items() if on), sve_bits


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
    sve_vl = libc.prctl(PR_SVE_GET_VL, 0, 0, 0, 0) if hwcap & HWCAP_BITS["sve"] else -1
    if hwcap & HWCAP_BITS["sve"] and sve_vl <= 0:
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
