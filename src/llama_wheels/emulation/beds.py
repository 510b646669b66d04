"""Which emulated bed runs a wheel: the glibc bed (build_config/sysroot.toml) for manylinux/linux aarch64
wheels, the musl bed (build_config/musl_bed.toml) for musllinux aarch64 wheels. The wheel's platform tag
decides (``qemu.libc_of_wheel``); every command that runs a wheel under emulation asks here."""

from __future__ import annotations

from pathlib import Path

from llama_wheels.core.cache import Cache
from llama_wheels.emulation.musl_bed import ensure_musl_sysroot
from llama_wheels.emulation.qemu import Sysroot, libc_of_wheel
from llama_wheels.emulation.sysroot import ensure_sysroot


def ensure_bed(cache: Cache, libc: str) -> Sysroot:
    """The bed of ``libc`` ("glibc" or "musl"), built first if not cached."""
    return ensure_musl_sysroot(cache) if libc == "musl" else ensure_sysroot(cache)


def bed_for_wheel(wheel: Path, cache: Cache) -> Sysroot:
    """The bed that runs ``wheel``, by its platform tag."""
    return ensure_bed(cache, libc_of_wheel(wheel))
