"""build_config/cpus.toml: the emulated ARM CPUs, each a qemu ``-cpu`` model plus the ISA features ggml's
ARM kernels care about (checked against what the guest really sees by ``emulation.qemu.measure_features``)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from llama_wheels.config.toml import Table, read_toml
from llama_wheels.core.errors import ConfigError

QEMU_CPU = re.compile(r"^[a-z0-9][a-z0-9-]*(,[a-z0-9-]+=[a-z0-9]+)*$")
# The features each CPU declares (as standalone/hostcpu.py names them), and its SVE vector length.
FEATURE_NAMES = ("dotprod", "fp16", "i8mm", "sve", "sve2", "sme", "bf16")
_FEATURE_KEYS = (*FEATURE_NAMES, "sve_bits")


@dataclass(frozen=True, kw_only=True)
class Features:
    """The ISA features of one CPU that decide which ggml kernels can run on it."""

    dotprod: bool  # SDOT/UDOT (asimddp): ggml's 4x4 Q4_0 kernels
    fp16: bool  # half-precision vector arithmetic (asimdhp)
    i8mm: bool  # int8 matrix multiply (SMMLA): the 4x8 and 8x8 layouts
    sve: bool  # the Scalable Vector Extension
    sve2: bool  # SVE2 (ggml's armv9.2 variants)
    sme: bool  # the Scalable Matrix Extension
    bf16: bool  # BFloat16 arithmetic: not one of ggml's variant features, but armv8.6-a and later imply it
    sve_bits: int  # the SVE vector length the guest runs with; 0 without SVE

    def summary(self) -> str:
        flags = [f.name for f in fields(self) if f.name != "sve_bits" and getattr(self, f.name)]
        text = "+".join(flags) or "armv8.0 baseline"
        return f"{text} (SVE {self.sve_bits} bits)" if self.sve_bits else text


@dataclass(frozen=True, kw_only=True)
class Cpu:
    name: str
    qemu_cpu: str  # qemu-user's -cpu value: a model name, or "max" with properties ("max,sve256=on")
    description: str  # the real machines this class stands for
    features: Features


def load_cpus(root: Path) -> dict[str, Cpu]:
    """Load and validate ``root/build_config/cpus.toml``, in file order."""
    path = root / "build_config" / "cpus.toml"
    doc = Table(read_toml(path), str(path))
    doc.check_keys(("cpus",))
    cpus = {name: _parse_cpu(name, data, str(path)) for name, data in doc.get("cpus", dict).items()}
    if not cpus:
        raise ConfigError(f"{path}: no [cpus.NAME] entries; the emulated tests need at least one CPU")
    return cpus


def _parse_cpu(name: str, data: Any, source: str) -> Cpu:
    t = Table(data, f"{source}: cpus.{name}")
    t.check_keys(("description", "qemu_cpu", *_FEATURE_KEYS))
    qemu_cpu = t.get("qemu_cpu", str, name)
    if not QEMU_CPU.match(qemu_cpu):
        raise ConfigError(f"{t.where}.qemu_cpu: {qemu_cpu!r} is not a qemu -cpu value like 'max,sve256=on'")
    flags = {key: t.get(key, bool) for key in _FEATURE_KEYS if key != "sve_bits"}
    sve_bits = t.data.get("sve_bits")
    if type(sve_bits) is not int:
        raise ConfigError(
            f"{t.where}.sve_bits: expected the SVE vector length in bits (an integer, 0 without SVE)"
        )
    if flags["sve"] != (sve_bits > 0) or (sve_bits and (sve_bits % 128 or not 128 <= sve_bits <= 2048)):
        raise ConfigError(
            f"{t.where}.sve_bits: {sve_bits} does not fit sve = {str(flags['sve']).lower()}; "
            "give a multiple of 128 from 128 to 2048 with SVE, 0 without"
        )
    if flags["sve2"] and not flags["sve"]:  # (sme does not: Apple M4 has SME without SVE)
        raise ConfigError(f"{t.where}: sve2 implies sve; set sve = true and its sve_bits")
    return Cpu(
        name=name,
        qemu_cpu=qemu_cpu,
        description=t.get("description", str),
        features=Features(sve_bits=sve_bits, **flags),
    )


# The one CPU a build's smoke test (and the legacy report's probes) run on: a Graviton2/Ampere class machine.
SMOKE_CPU = "neoverse-n1"


def choose_cpus(cpus: Mapping[str, Cpu], names: Sequence[str]) -> list[Cpu]:
    """The CPUs named (every one of cpus.toml when none is); an unknown name is a ConfigError with the nearest."""
    for name in names:
        if name not in cpus:
            close = difflib.get_close_matches(name, list(cpus), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(cpus)}"
            raise ConfigError(f"unknown CPU {name!r} ({hint}); CPUs are defined in build_config/cpus.toml")
    return [cpus[name] for name in names] or list(cpus.values())
