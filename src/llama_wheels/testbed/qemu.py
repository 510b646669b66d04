"""The emulated ARM CPUs (build_config/cpus.toml) and running the sysroot's Python under qemu-user.

Each CPU is a ``qemu-aarch64-static -cpu`` model plus the ISA features ggml's ARM kernels care about, as
data that ``measure_features`` checks against what the guest really sees (ELF auxv hwcaps, SVE vector
length). The guest runs in an environment built from scratch (``env -i``), so nothing of the host's Python
setup (PYTHONHOME, PYTHONSTARTUP, user site, LD_PRELOAD, QEMU_*) reaches it, and with core dumps off, so
an expected SIGILL leaves no qemu core file behind. A guest killed by a signal shows as a negative
return code: ``Outcome.signal_name == "SIGILL"``.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_wheels.binaries.wheel import parse_wheel_name
from llama_wheels.config.cpus import FEATURE_NAMES, Cpu, Features
from llama_wheels.core import runner
from llama_wheels.core.cache import atomic_path
from llama_wheels.core.errors import CommandFailed, UserError
from llama_wheels.testbed import hostcpu

QEMU = "qemu-aarch64-static"
QEMU_HINT = "install qemu-user-static: apt-get install qemu-user-static"

_ENV_PASSTHROUGH = ("HOME", "TMPDIR")
_EM_AARCH64 = 183



@dataclass(frozen=True, kw_only=True)
class Sysroot:
    root: Path
    python: Path  # root/usr/bin/python3.11
    site: Path  # the aarch64 site-packages, to go on the guest's PYTHONPATH
    manifest: dict[str, Any]

    @property
    def key(self) -> str:
        return self.root.name


def require_qemu() -> str:
    """Absolute path of qemu-aarch64-static, or a ToolchainError saying how to install it."""
    return runner.require_tool(QEMU, QEMU_HINT)


def guest_env(pythonpath: Sequence[Path], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The guest's complete environment: a fixed base, HOME/TMPDIR from the host, ``env`` on top."""
    if env and "PYTHONPATH" in env:
        raise ValueError("pass PYTHONPATH entries as pythonpath=, not in env=")
    base = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    base.update({key: os.environ[key] for key in _ENV_PASSTHROUGH if key in os.environ})
    base.update(
        PYTHONPATH=os.pathsep.join(os.fspath(p) for p in pythonpath),
        PYTHONDONTWRITEBYTECODE="1",  # the sysroot is shared and precompiled; never write into it
        PYTHONNOUSERSITE="1",  # the host user's ~/.local site-packages holds x86_64 modules
    )
    base.update(env or {})
    return base


def run_guest(
    root: Path,
    python: Path,
    qemu_cpu: str,
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    pythonpath: Sequence[Path] = (),
    cwd: Path | None = None,
    timeout: float = 600,
) -> runner.Outcome:
    """Run ``python args`` from sysroot ``root`` on emulated ``qemu_cpu``; the caller judges the Outcome.

    The low-level form of ``run_python`` for a sysroot that is still being built.
    """
    qemu = require_qemu()
    assignments = [f"{key}={value}" for key, value in guest_env(pythonpath, env).items()]
    argv = [
        *("prlimit", "--core=0", "--"),  # qemu dumps a guest core into the cwd on SIGILL/SIGSEGV
        *("env", "-i", *assignments),
        *(qemu, "-cpu", qemu_cpu, "-L", os.fspath(root)),
        os.fspath(python),
        *args,
    ]
    return runner.probe(argv, cwd=cwd, timeout=timeout)


def run_python(
    sysroot: Sysroot,
    cpu: Cpu,
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    pythonpath: Sequence[Path] = (),
    cwd: Path | None = None,
    timeout: float = 600,
) -> runner.Outcome:
    """Run the sysroot's python with ``args`` on ``cpu``; PYTHONPATH = ``pythonpath`` + the sysroot's site.

    Never raises for the guest's own failure: check ``returncode`` / ``signal_name`` (SIGILL = -4).
    """
    return run_guest(
        sysroot.root,
        sysroot.python,
        cpu.qemu_cpu,
        args,
        env=env,
        pythonpath=[*pythonpath, sysroot.site],
        cwd=cwd,
        timeout=timeout,
    )


def measure_features(sysroot: Sysroot, cpu: Cpu) -> Features:
    """The features the guest really sees on ``cpu``, read by ``hostcpu.py`` (the module the wheel suite
    ships, so the test bed and a native run read a CPU the same way), to check cpus.toml."""
    outcome = run_python(sysroot, cpu, [os.fspath(Path(hostcpu.__file__))], timeout=120)
    lines = [line for line in outcome.output.splitlines() if line.startswith("HOSTCPU ")]
    if outcome.returncode != 0 or not lines:
        how = outcome.signal_name or f"exit {outcome.returncode}"
        raise CommandFailed(
            f"CPU feature probe on {cpu.name} ({how}); last output: {' | '.join(outcome.tail[-3:])}",
            tail=outcome.tail,
        )
    host = hostcpu.HostCpu.from_json(lines[-1].removeprefix("HOSTCPU "))
    return Features(**{name: name in host.features for name in FEATURE_NAMES}, sve_bits=host.sve_bits)


def install_wheel(wheel: Path, dest: Path) -> Path:
    """Unpack aarch64 ``wheel`` into a fresh ``dest`` (replacing it atomically) for use on PYTHONPATH.

    Refuses anything that is not a glibc Linux aarch64 wheel, judged by its tag and by every ELF inside.
    """
    parsed = parse_wheel_name(wheel.name)
    if parsed is None or not wheel.is_file():
        raise UserError(f"{wheel}: not a wheel file (NAME-VERSION-PY-ABI-PLATFORM.whl); pass the built .whl")
    platforms = sorted(parsed.platforms)
    if not all(p.endswith("_aarch64") and p.startswith(("linux_", "manylinux")) for p in platforms):
        raise UserError(
            f"{wheel.name}: platform tag {'.'.join(platforms)!r} is not glibc Linux aarch64; "
            "the emulated test bed runs only linux/manylinux *_aarch64 wheels"
        )
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{wheel}: unreadable as a zip archive ({exc}); rebuild the wheel") from None
    with archive, atomic_path(dest, directory=True) as tmp:
        for info in archive.infolist():
            _refuse_foreign_elf(wheel, archive, info)
            extracted = Path(archive.extract(info, tmp))  # zipfile drops absolute and ".." parts
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                extracted.chmod(mode | 0o600)
        _merge_data_dirs(tmp)
    return dest


def _refuse_foreign_elf(wheel: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    if info.is_dir():
        return
    with archive.open(info) as fh:
        head = fh.read(20)
    if len(head) < 20 or not head.startswith(b"\x7fELF"):
        return
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    if head[4] != 2 or machine != _EM_AARCH64:
        raise UserError(
            f"{wheel.name}: {info.filename} is not a 64-bit aarch64 ELF (e_machine {machine}); "
            "the wheel was built for another architecture despite its tag"
        )


def _merge_data_dirs(root: Path) -> None:
    """Move ``*.data/purelib`` and ``*.data/platlib`` contents to the top, as an installer would."""
    for data in root.glob("*.data"):
        for scheme in ("purelib", "platlib"):
            src = data / scheme
            if not src.is_dir():
                continue
            for item in src.iterdir():
                target = root / item.name
                if target.exists():
                    raise UserError(
                        f"{data.name}/{scheme}/{item.name} collides with {item.name} in the wheel"
                    )
                item.rename(target)
