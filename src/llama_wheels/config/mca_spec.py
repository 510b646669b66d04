"""build_config/mca.toml: the pinned llvm-mca that estimates cycles from counted blocks, and which counted CPU
class each scheduling model prices, validated."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llama_wheels.config.cpus import QEMU_CPU, Cpu
from llama_wheels.config.qemu_spec import DEB_NAME, DEB_VERSION, WORD
from llama_wheels.config.toml import Table, read_toml
from llama_wheels.core.errors import ConfigError

_RELEASE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")


@dataclass(frozen=True, kw_only=True)
class McaModel:
    name: str  # llvm-mca -mcpu: "neoverse-v2"
    cpu: str  # the counted class whose blocks it prices: a cpus.toml class, or the model's own (qemu_cpu)
    description: str
    # A core qemu has no model of is counted on a class of its own, for its pricing only (not in the matrix):
    # qemu's -cpu value at the core's vector length, and the cpus.toml class whose features ggml sees there.
    qemu_cpu: str | None = None
    features_of: str | None = None


@dataclass(frozen=True, kw_only=True)
class McaSpec:
    source: Path
    package: str  # "llvm-22"
    version: str  # the Debian version: "1:22.1.8-1~deb12u1"
    release: str  # what llvm-mca --version names: "22.1.8"
    bin: Path  # where llvm-mca and llvm-mc are
    iterations: int
    call_latency: int  # cycles llvm-mca assumes for a call instruction (its default is 100)
    models: tuple[McaModel, ...]

    @property
    def llvm_mca(self) -> Path:
        return self.bin / "llvm-mca"

    @property
    def llvm_mc(self) -> Path:
        return self.bin / "llvm-mc"


def load_mca_spec(root: Path, known_cpus: tuple[str, ...] = ()) -> McaSpec:
    """``root``/build_config/mca.toml; with ``known_cpus``, each model's class must be one of them."""
    path = root / "build_config" / "mca.toml"
    data = Table(read_toml(path), str(path))
    data.check_keys(("llvm", "models"))
    llvm = Table(data.get("llvm", dict), f"{path} [llvm]")
    llvm.check_keys(("package", "version", "release", "bin", "iterations", "call_latency"))
    bin_dir = Path(llvm.get("bin", str))
    if not bin_dir.is_absolute():
        raise ConfigError(f"{llvm.where}.bin: {bin_dir} is not an absolute path")
    iterations = llvm.get("iterations", int)
    if not 10 <= iterations <= 10000:
        raise ConfigError(f"{llvm.where}.iterations: {iterations} is outside 10..10000")
    call_latency = llvm.get("call_latency", int)
    if not 1 <= call_latency <= 100:
        raise ConfigError(f"{llvm.where}.call_latency: {call_latency} is outside 1..100")
    models = []
    for name, raw in Table(data.get("models", dict), f"{path} [models]").data.items():
        if not WORD.match(name):
            raise ConfigError(f"{path} [models.{name}]: not an llvm-mca CPU name")
        t = Table(raw, f"{path} [models.{name}]")
        t.check_keys(("cpu", "description", "qemu_cpu", "features_of"))
        if ("cpu" in t.data) == ("qemu_cpu" in t.data) or ("qemu_cpu" in t.data) != ("features_of" in t.data):
            raise ConfigError(f"{t.where}: give either cpu (a counted class of build_config/cpus.toml) or "
                              "qemu_cpu and features_of (a class counted for this model alone)")
        qemu_cpu = t.match("qemu_cpu", QEMU_CPU, "a qemu -cpu value like 'max,sve128=on'") if "qemu_cpu" in t.data \
            else None
        features_of = t.get("features_of", str) if "features_of" in t.data else None
        cpu = name if qemu_cpu else t.get("cpu", str)
        for key, value in (("cpu", None if qemu_cpu else cpu), ("features_of", features_of)):
            if value is not None and known_cpus and value not in known_cpus:
                raise ConfigError(f"{t.where}.{key}: {value!r} is no class of build_config/cpus.toml")
        if qemu_cpu is not None and known_cpus and name in known_cpus:
            raise ConfigError(f"{t.where}: {name!r} is already a class of build_config/cpus.toml; use cpu = {name!r}")
        models.append(McaModel(name=name, cpu=cpu, description=t.get("description", str), qemu_cpu=qemu_cpu,
                               features_of=features_of))
    if not models:
        raise ConfigError(f"{path}: no [models.*]; name at least one llvm-mca CPU model")
    return McaSpec(source=path, package=llvm.match("package", DEB_NAME, "a Debian package name"),
                   version=llvm.match("version", DEB_VERSION, "a Debian version"),
                   release=llvm.match("release", _RELEASE, "an LLVM release like 22.1.8"),
                   bin=bin_dir, iterations=iterations, call_latency=call_latency, models=tuple(models))


def own_classes(spec: McaSpec, cpus: Mapping[str, Cpu]) -> dict[str, Cpu]:
    """The classes counted for one model alone (``qemu_cpu``): named after the model, with the features of
    its ``features_of`` class (``cpus``: cpus.toml's)."""
    return {m.name: Cpu(name=m.name, qemu_cpu=m.qemu_cpu, features=cpus[m.features_of].features,
                        description=f"{m.description} (pricing only: qemu -cpu {m.qemu_cpu}, the features ggml "
                                    f"sees on {m.features_of})")
            for m in spec.models if m.qemu_cpu is not None and m.features_of is not None}
