"""The emulator of the ARM test bed, the emulated CPUs (build_config/cpus.toml), and running the sysroot's
Python under qemu-user.

The emulator is the qemu-user .deb that build_config/qemu.toml pins by sha256 (Debian 13's 10.0, a static
binary), fetched through a private apt configuration and kept, unpacked, in the cache by that sha256
(``ensure_qemu``); never a qemu found on PATH, so every machine judges with the qemu cpus.toml was measured
with. Each CPU is a ``qemu-aarch64 -cpu`` model plus the ISA features ggml's ARM kernels care about, as
data that ``measure_features`` checks against what the guest really sees (ELF auxv hwcaps, SVE vector
length). The guest runs in an environment built from scratch (``env -i``), so nothing of the host's Python
setup (PYTHONHOME, PYTHONSTARTUP, user site, LD_PRELOAD, QEMU_*) reaches it, and with core dumps off, so
an expected SIGILL leaves no qemu core file behind. A guest killed by a signal shows as a negative
return code: ``Outcome.signal_name == "SIGILL"``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_wheels.binaries.elf import elf_facts
from llama_wheels.binaries.wheel import libc_of_tag, parse_wheel_name, wheel_name
from llama_wheels.config.cpus import FEATURE_NAMES, Cpu, Features
from llama_wheels.config.qemu_spec import QemuSpec, load_qemu_spec
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache, atomic_path, locked
from llama_wheels.core.errors import CommandFailed, ToolchainError, UserError
from llama_wheels.emulation import debs
from llama_wheels.emulation.guest import reported
from llama_wheels.standalone import hostcpu

_ENV_PASSTHROUGH = ("HOME", "TMPDIR")
_EM_AARCH64 = 183
_DEB_RECORD = "deb.json"
# Debian architecture -> what platform.machine() and pyelftools call the machine that runs the emulator.
_HOST_MACHINES = {"amd64": ("x86_64", "EM_X86_64"), "arm64": ("aarch64", "EM_AARCH64")}


@dataclass(frozen=True, kw_only=True)
class Sysroot:
    root: Path
    python: Path  # root/usr/bin/python3.11
    site: Path  # the aarch64 site-packages, to go on the guest's PYTHONPATH
    manifest: dict[str, Any]
    qemu: Path  # the pinned qemu-aarch64 that runs it (ensure_qemu)

    @property
    def key(self) -> str:
        return self.root.name


def checkout_root() -> Path:
    """The llama-wheels checkout this module runs from (holds build_config/)."""
    return Path(__file__).resolve().parents[3]


def ensure_qemu(cache: Cache, spec: QemuSpec | None = None) -> Path:
    """The pinned qemu-aarch64 (``spec``, default: this checkout's qemu.toml), unpacked into the cache
    (``tools/qemu-user-<sha256 prefix>/``) from its .deb first if not there.

    A .deb whose sha256 is not the pinned one is refused (apt's index is compared with the pin before
    anything is downloaded, then the file with the index), and so is a binary that is not static or does not
    run here; nothing is cached then.
    """
    spec = spec or load_qemu_spec(checkout_root())
    final = cache.dir("tools") / f"{spec.package}-{spec.sha256[:16]}"
    binary = final / spec.binary.name
    if binary.is_file():
        return binary
    machine, em = _HOST_MACHINES.get(spec.arch, ("", ""))
    if platform.machine() != machine:
        raise ToolchainError(
            f"{spec.source}: pins qemu-user for {spec.arch}, but this machine is {platform.machine()}; "
            "pin the .deb of this machine's architecture (see the file's header)"
        )
    if not spec.keyring.is_file():
        raise ToolchainError(f"{spec.keyring} (the keyring {spec.source} names) is missing; "
                             "install it: apt-get install debian-archive-keyring")
    with locked(cache.dir("tools") / f".{final.name}.lock"):
        if binary.is_file():  # another process may have fetched it while we waited
            return binary
        subject = f"{spec.package} {spec.version} ({spec.suite}, sha256 {spec.sha256[:12]})"
        with runner.current_log().stage("qemu", subject), tempfile.TemporaryDirectory(
            prefix=".scratch-", dir=cache.dir("tools")
        ) as scratch_name:
            scratch = Path(scratch_name)
            apt, update = debs.private_apt(cache, spec.sources_line, spec.arch)
            [(deb, sha256)] = debs.fetch_debs(
                [spec.apt_name], scratch=scratch, apt=apt, update=update, pinned={spec.package: spec.sha256},
                where=f"{spec.source}: [package]",
                fix=f"to move the pin, see the header of {spec.source.name}",
            )
            runner.run(["dpkg", "-x", deb, scratch / "root"])
            unpacked = scratch / "root" / spec.binary
            check_static_binary(unpacked, em, spec)
            with atomic_path(final, directory=True) as tmp:
                tmp.chmod(0o755)
                shutil.copy2(unpacked, tmp / binary.name)
                record = {"package": spec.package, "version": spec.version, "arch": spec.arch,
                          "sha256": sha256, "file": deb.name, "binary": str(spec.binary)}
                (tmp / _DEB_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return binary


def check_static_binary(binary: Path, machine: str, spec: QemuSpec) -> None:
    """Refuse ``binary`` unless it is an ELF for ``machine`` (pyelftools' name) that needs no shared library
    (it must run on this Debian 12 without the newer glibc of its suite) and ``--version`` names ``spec``'s
    version."""
    if not binary.is_file():
        raise UserError(f"{spec.source}: {spec.package} {spec.version} has no {spec.binary}; fix [package].binary")
    data = binary.read_bytes()
    facts = elf_facts(binary.name, data) if data.startswith(b"\x7fELF") else None
    if facts is None or facts.machine != machine:
        raise UserError(f"{spec.source}: {spec.binary} of {spec.package} {spec.version} is not an ELF "
                        f"executable for {machine}; pin the package of this machine's architecture")
    if facts.needed:
        raise UserError(f"{spec.source}: {spec.binary} of {spec.package} {spec.version} is dynamically linked "
                        f"(needs {', '.join(facts.needed)}), so it depends on its suite's libraries; "
                        "pin a package whose binaries are static")
    outcome = runner.probe([binary, "--version"], timeout=60)
    if outcome.returncode != 0 or f"(Debian {spec.version})" not in outcome.output:
        said = next((line for line in outcome.output.splitlines() if " version " in line), None)
        raise UserError(f"{spec.source}: {spec.binary} of {spec.package} {spec.version} does not run here or "
                        f"is another version: {said or runner.telling_line(outcome.tail)}")


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
    qemu: Path,
    env: Mapping[str, str] | None = None,
    pythonpath: Sequence[Path] = (),
    cwd: Path | None = None,
    timeout: float = 600,
    qemu_args: Sequence[str] = (),
    prefix: Sequence[str] = (),
) -> runner.Outcome:
    """Run ``python args`` from sysroot ``root`` on emulated ``qemu_cpu``; the caller judges the Outcome.

    The low-level form of ``run_python`` for a sysroot that is still being built; ``qemu``: ``ensure_qemu``'s.
    ``qemu_args``: more options for qemu (``-plugin``...); ``prefix``: a command qemu runs under (``setarch -R``).
    """
    # How a guest's aarch64 child process is run (guest_exec.py, the musl bed's stand-in for binfmt_misc).
    exec_config = json.dumps([os.fspath(qemu), qemu_cpu, os.fspath(root)])
    assignments = [f"{key}={value}" for key, value in
                   guest_env(pythonpath, {"LLAMA_WHEELS_GUEST_EXEC": exec_config, **(env or {})}).items()]
    argv = [
        *("prlimit", "--core=0", "--"),  # qemu dumps a guest core into the cwd on SIGILL/SIGSEGV
        *("env", "-i", *assignments),
        *prefix,
        *(os.fspath(qemu), "-cpu", qemu_cpu, *qemu_args, "-L", os.fspath(root)),
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
        qemu=sysroot.qemu,
        env=env,
        pythonpath=[*pythonpath, sysroot.site],
        cwd=cwd,
        timeout=timeout,
    )


def measure_features(sysroot: Sysroot, cpu: Cpu) -> Features:
    """The features the guest really sees on ``cpu``, read by ``hostcpu.py`` (the module the wheel suite
    ships, so the test bed and a native run read a CPU the same way), to check cpus.toml."""
    outcome = run_python(sysroot, cpu, [os.fspath(Path(hostcpu.__file__))], timeout=120)
    found = reported(outcome.output.splitlines(), "HOSTCPU")
    if outcome.returncode != 0 or not found:
        how = outcome.signal_name or f"exit {outcome.returncode}"
        raise CommandFailed(
            f"CPU feature probe on {cpu.name} ({how}); last output: {' | '.join(outcome.tail[-3:])}",
            tail=outcome.tail,
        )
    host = hostcpu.HostCpu.from_json(json.dumps(found[-1]))
    return Features(**{name: name in host.features for name in FEATURE_NAMES}, sve_bits=host.sve_bits)


def install_wheel(wheel: Path, dest: Path) -> Path:
    """Unpack aarch64 ``wheel`` into a fresh ``dest`` (replacing it atomically) for use on PYTHONPATH.

    Refuses anything that is not a Linux aarch64 wheel (glibc or musl), judged by its tag and by every ELF
    inside; which bed runs it is ``libc_of_wheel``'s answer.
    """
    parsed = parse_wheel_name(wheel.name)
    if parsed is None or not wheel.is_file():
        raise UserError(f"{wheel}: not a wheel file (NAME-VERSION-PY-ABI-PLATFORM.whl); pass the built .whl")
    libc_of_wheel(wheel)
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


def libc_of_wheel(wheel: Path) -> str:
    """Which emulated bed runs ``wheel``, from its platform tags: "glibc" (manylinux_*/linux_ aarch64) or
    "musl" (musllinux_*_aarch64). The one place a wheel's tag picks a bed; anything else is a UserError."""
    platforms = sorted(wheel_name(wheel).platforms)
    kinds = {libc_of_tag(p) for p in platforms if p.endswith("_aarch64")}
    if len(kinds) != 1 or None in kinds or not all(p.endswith("_aarch64") for p in platforms):
        raise UserError(
            f"{wheel.name}: platform tag {'.'.join(platforms)!r} is not Linux aarch64 of one libc; the emulated "
            "test beds run manylinux/linux *_aarch64 wheels (glibc) and musllinux_*_aarch64 wheels (musl)"
        )
    return str(kinds.pop())


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
