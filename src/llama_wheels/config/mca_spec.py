"""build_config/mca.toml: the pinned llvm-mca that estimates cycles from counted blocks, and which counted CPU
class each scheduling model prices, validated."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llama_wheels.config.qemu_spec import DEB_NAME, DEB_VERSION, WORD
from llama_wheels.config.toml import Table, read_toml
from llama_wheels.core.errors import ConfigError

_RELEASE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")


@dataclass(frozen=True, kw_only=True)
class McaModel:
    name: str  # llvm-mca -mcpu: "neoverse-v2"
    cpu: str  # the counted class (cpus.toml) whose blocks it prices
    description: str


@dataclass(frozen=True, kw_only=True)
class McaSpec:
    source: Path
    package: str  # "llvm-22"
    version: str  # the Debian version: "1:22.1.8-1~deb12u1"
    release: str  # what llvm-mca --version names: "22.1.8"
    bin: Path  # where llvm-mca and llvm-mc are
    iterations: int
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
    llvm.check_keys(("package", "version", "release", "bin", "iterations"))
    bin_dir = Path(llvm.get("bin", str))
    if not bin_dir.is_absolute():
        raise ConfigError(f"{llvm.where}.bin: {bin_dir} is not an absolute path")
    iterations = llvm.get("iterations", int)
    if not 10 <= iterations <= 10000:
        raise ConfigError(f"{llvm.where}.iterations: {iterations} is outside 10..10000")
    models = []
    for name, raw in Table(data.get("models", dict), f"{path} [models]").data.items():
        if not WORD.match(name):
            raise ConfigError(f"{path} [models.{name}]: not an llvm-mca CPU name")
        t = Table(raw, f"{path} [models.{name}]")
        t.check_keys(("cpu", "description"))
        cpu = t.get("cpu", str)
        if known_cpus and cpu not in known_cpus:
            raise ConfigError(f"{t.where}.cpu: {cpu!r} is no class of build_config/cpus.toml")
        models.append(McaModel(name=name, cpu=cpu, description=t.get("description", str)))
    if not models:
        raise ConfigError(f"{path}: no [models.*]; name at least one llvm-mca CPU model")
    return McaSpec(source=path, package=llvm.match("package", DEB_NAME, "a Debian package name"),
                   version=llvm.match("version", DEB_VERSION, "a Debian version"),
                   release=llvm.match("release", _RELEASE, "an LLVM release like 22.1.8"),
                   bin=bin_dir, iterations=iterations, models=tuple(models))
