"""What each platform means for compiling and repairing: one entry per platform, nowhere else."""

from __future__ import annotations

from dataclasses import dataclass

from llama_wheels.core.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Platform:
    name: str
    zig_target: str  # what `zig cc -target` gets: arch, OS, and for Linux the libc (glibc: with its floor)
    cmake_system_name: str
    cmake_processor: str
    host_platform: str  # _PYTHON_HOST_PLATFORM for the wheel tag scikit-build-core writes
    wheel_platform: str  # the tag the repaired wheel must carry
    elf_machine: str | None  # pyelftools e_machine of every shared library (Linux)
    glibc_max: tuple[int, int] | None  # highest GLIBC symbol version a library may need (glibc Linux)
    # The C library of a Linux platform: "glibc" or "musl" (None: not Linux). A musl library needs no
    # versioned symbol at all (musl has no symbol versioning) and names libc by ``libc_soname``.
    libc: str | None = None
    # The DT_NEEDED name of the C library that auditwheel's policy allows (musl: ``libc.musl-<arch>.so.1``,
    # as Alpine's musl names itself and auditwheel's musllinux policy lists it). zig's musl links name it
    # ``libc.so``; the repair stage renames that need (musl's loader takes every ``libc.*`` as itself).
    libc_soname: str | None = None
    # The program interpreter (PT_INTERP) of the platform's dynamic loader: a library that names one names
    # this one, never another libc's.
    loader: str | None = None
    deployment_target: str | None = None  # MACOSX_DEPLOYMENT_TARGET = every Mach-O's minos (macOS)
    # Switches that, turned on, need the platform SDK (Apple frameworks), which zig does not ship:
    # such a job is built with the platform's own compiler on its CI runner, not cross built with zig.
    sdk_switches: tuple[str, ...] = ()
    # The -march every library that is not a CPU variant (nor of a fixed-ISA wheel) may use: what every CPU
    # the platform's wheels install on has (``llama-wheels audit``). None: the audit does not read its code.
    isa_baseline: str | None = None


_REGISTRY = {
    p.name: p
    for p in (
        Platform(
            name="linux-aarch64",
            zig_target="aarch64-linux-gnu.2.17",
            cmake_system_name="Linux",
            cmake_processor="aarch64",
            host_platform="linux_aarch64",
            wheel_platform="manylinux_2_17_aarch64",
            elf_machine="EM_AARCH64",
            glibc_max=(2, 17),
            libc="glibc",
            loader="/lib/ld-linux-aarch64.so.1",
            isa_baseline="armv8-a",
        ),
        # Alpine (Home Assistant OS on a Pi, Alpine containers on Graviton): musl 1.2, PEP 656's
        # musllinux_1_2. The same code as linux-aarch64 (the same ISA baseline), another C library.
        Platform(
            name="linux-aarch64-musl",
            zig_target="aarch64-linux-musl",
            cmake_system_name="Linux",
            cmake_processor="aarch64",
            host_platform="linux_aarch64",
            wheel_platform="musllinux_1_2_aarch64",
            elf_machine="EM_AARCH64",
            glibc_max=None,
            libc="musl",
            libc_soname="libc.musl-aarch64.so.1",
            loader="/lib/ld-musl-aarch64.so.1",
            isa_baseline="armv8-a",
        ),
        Platform(
            name="linux-x86_64",
            zig_target="x86_64-linux-gnu.2.17",
            cmake_system_name="Linux",
            cmake_processor="x86_64",
            host_platform="linux_x86_64",
            wheel_platform="manylinux_2_17_x86_64",
            elf_machine="EM_X86_64",
            glibc_max=(2, 17),
            libc="glibc",
            loader="/lib64/ld-linux-x86-64.so.2",
        ),
        Platform(
            name="macos-arm64",
            zig_target="aarch64-macos.11.0",
            cmake_system_name="Darwin",
            cmake_processor="arm64",
            host_platform="macosx-11.0-arm64",
            wheel_platform="macosx_11_0_arm64",
            elf_machine=None,
            glibc_max=None,
            deployment_target="11.0",
            sdk_switches=("metal", "accelerate", "blas"),
            # Apple M1 (the oldest arm64 Mac): LLVM's apple-m1, zig's default CPU for aarch64-macos, is
            # armv8.4-a (LSE, RCPC, dotprod) with FP16; its SHA3/FP16FML are not listed until code uses them.
            isa_baseline="armv8.4-a+fp16",
        ),
    )
}
PLATFORMS = tuple(_REGISTRY)


def auditwheel_policy(target: Platform) -> str:
    """The auditwheel policy a Linux ``target``'s wheel is repaired to: its tag less the architecture
    (``manylinux_2_17``, ``musllinux_1_2``)."""
    suffix = f"_{target.cmake_processor}"
    if target.libc is None or not target.wheel_platform.endswith(suffix):
        raise ConfigError(f"platform {target.name}: {target.wheel_platform} is no Linux tag of "
                          f"{target.cmake_processor}")
    return target.wheel_platform.removesuffix(suffix)


def platform(name: str) -> Platform:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown platform {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
