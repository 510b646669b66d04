"""The emulated test bed's arm64 root: Debian packages plus aarch64 wheels, built once per input.

``build_config/sysroot.toml`` names the Debian arm64 packages (unpacked with ``dpkg -x``, no maintainer
scripts, no root-owned state beyond apt knowing the arm64 architecture) and the exact aarch64 wheels for
the guest's site-packages. The sysroot lives at ``cache.sysroots / KEY``, KEY being the hash of that file's
parsed content, and is built in a temp dir and renamed into place, so a half-built root is never used.
Before it is published its python must import the ``[smoke]`` modules on the oldest emulated CPU.
Its ``manifest.json`` records the exact .deb and wheel versions and sha256 that went in.

Layout: KEY/{usr,lib,etc}/ (the Debian root), KEY/site-packages/ (the wheels), KEY/manifest.json.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from llama_wheels.binaries.wheel import parse_wheel_name
from llama_wheels.config.sysroot_spec import LAYOUT, SysrootSpec, load_sysroot_spec
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache, atomic_path, locked, sha256_file
from llama_wheels.core.errors import ChecksumError, ConfigError, LlamaWheelsError, ToolchainError
from llama_wheels.emulation.debs import fetch_debs, require_apt
from llama_wheels.emulation.guest import reported
from llama_wheels.emulation.qemu import Sysroot, checkout_root, ensure_qemu, run_guest

SITE = "site-packages"
MANIFEST = "manifest.json"

# Imports each module named on the command line; reports where each was found.
_SMOKE = """\
import importlib, json, sys
mods = {name: getattr(importlib.import_module(name), "__file__", None) for name in sys.argv[1:]}
print("SMOKE " + json.dumps({"version": sys.version.split()[0], "path": sys.path, "modules": mods}))
"""


class BedSpec(Protocol):
    """What the steps every bed shares (its wheels, precompiling, the smoke check) read from its spec."""

    @property
    def source(self) -> Path: ...
    @property
    def python(self) -> str: ...
    @property
    def wheel_platform(self) -> str: ...
    @property
    def wheels(self) -> Mapping[str, str]: ...
    @property
    def wheel_sha256(self) -> Mapping[str, str]: ...
    @property
    def smoke_cpu(self) -> str: ...
    @property
    def smoke_imports(self) -> tuple[str, ...]: ...


def ensure_sysroot(cache: Cache, spec: SysrootSpec | None = None) -> Sysroot:
    """The sysroot for ``spec`` (default: this checkout's sysroot.toml), built first if not cached."""
    spec = spec or load_sysroot_spec(checkout_root())
    qemu = ensure_qemu(cache)
    final = cache.sysroots / spec.key
    found = _open(final, spec, qemu)
    if found is not None:
        return found
    with locked(cache.sysroots / f".{spec.key}.lock"):
        found = _open(final, spec, qemu)  # another process may have built it while we waited
        if found is not None:
            return found
        subject = f"{spec.key} ({len(spec.packages)} debs, {len(spec.wheels)} wheels)"
        with runner.current_log().stage("sysroot", subject), atomic_path(final, directory=True) as tmp:
            _build(cache, spec, tmp, qemu)
    found = _open(final, spec, qemu)
    assert found is not None, final
    return found


def _open(root: Path, spec: SysrootSpec, qemu: Path) -> Sysroot | None:
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("key") != spec.key:
        return None
    return Sysroot(
        root=root, python=root / "usr" / "bin" / f"python{spec.python}", site=root / SITE, manifest=manifest,
        qemu=qemu,
    )


def _build(cache: Cache, spec: SysrootSpec, root: Path, qemu: Path) -> None:
    started = time.monotonic()
    require_apt()
    with tempfile.TemporaryDirectory(prefix=".scratch-", dir=cache.sysroots) as scratch_name:
        scratch = Path(scratch_name)
        updated = _ensure_foreign_arch(spec.arch)
        debs = fetch_debs(
            [_apt_name(p, spec.arch) for p in spec.packages], scratch=scratch, store=cache.dir("debs"),
            # an index older than the architecture or the package: only root can update the system's
            update=None if updated or os.geteuid() != 0 else lambda: runner.run(["apt-get", "update"]),
            where=f"{spec.source}: [debian].packages",
        )
        debian = [_unpack(deb, sha256, root) for deb, sha256 in debs]
        python = root / "usr" / "bin" / f"python{spec.python}"
        if not python.is_file():
            raise ConfigError(
                f"{spec.source}: no usr/bin/python{spec.python} after unpacking; "
                f"add python{spec.python}-minimal to [debian].packages"
            )
        site = root / SITE
        wheels = install_wheels(spec, site, scratch / "wheels")
    precompile(spec, root, python, site, qemu)
    guest = smoke(spec, root, python, site, qemu)
    manifest = {
        "key": spec.key,
        "layout": LAYOUT,
        "spec": spec.data,
        "python": {"path": str(python.relative_to(root)), "version": guest["version"]},
        "debian": sorted(debian, key=lambda d: d["package"]),
    }
    write_manifest(root, manifest, wheels, started)


def write_manifest(root: Path, manifest: dict[str, Any], wheels: list[dict[str, str]], started: float) -> None:
    """``manifest`` plus what every bed records (site, wheels, size, when, how long) as root/manifest.json."""
    manifest = {**manifest, "site": SITE, "wheels": wheels, "size_bytes": tree_size(root),
                "built_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "build_seconds": round(time.monotonic() - started, 1)}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _ensure_foreign_arch(arch: str) -> bool:
    """Make apt able to download ``arch`` packages; True if that ran ``apt-get update``."""
    if runner.run(["dpkg", "--print-architecture"], capture=True).strip() == arch:
        return False
    if arch in runner.run(["dpkg", "--print-foreign-architectures"], capture=True).split():
        return False
    if os.geteuid() != 0:
        raise ToolchainError(
            f"dpkg does not know the {arch} architecture; "
            f"as root run: dpkg --add-architecture {arch} && apt-get update"
        )
    runner.run(["dpkg", "--add-architecture", arch])
    runner.run(["apt-get", "update"])
    return True


def _apt_name(package: str, arch: str) -> str:
    return package if package.endswith(":all") else f"{package}:{arch}"


def _unpack(deb: Path, sha256: str, root: Path) -> dict[str, str]:
    runner.run(["dpkg", "-x", deb, root])
    fields = runner.run(["dpkg-deb", "--field", deb, "Package", "Version", "Architecture"], capture=True)
    info = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
    return {
        "package": info["Package"],
        "version": info["Version"],
        "architecture": info["Architecture"],
        "file": deb.name,
        "sha256": sha256,
    }


def install_wheels(spec: BedSpec, site: Path, wheel_dir: Path) -> list[dict[str, str]]:
    """Download exactly the pinned wheels, then install those files (and nothing else) into ``site``."""
    target = [
        *("--only-binary=:all:", "--no-deps", "--platform", spec.wheel_platform),
        *("--python-version", spec.python, "--implementation", "cp", "--disable-pip-version-check"),
    ]
    requirements = [f"{project}=={version}" for project, version in spec.wheels.items()]
    pip = [sys.executable, "-m", "pip"]
    outcome = runner.probe([*pip, "download", *target, "--dest", wheel_dir, *requirements])
    if outcome.returncode != 0:
        errors = [line for line in outcome.tail if line.startswith("ERROR:")] or list(outcome.tail[-1:])
        raise ConfigError(
            f"{spec.source}: [wheels.pins]: pip cannot get them for {spec.wheel_platform}: {' '.join(errors)}"
        )
    files: dict[str, Path] = {}
    for wheel in sorted(wheel_dir.glob("*.whl")):
        parsed = parse_wheel_name(wheel.name)
        if parsed is None or spec.wheels.get(parsed.project) != str(parsed.version):
            raise ToolchainError(
                f"pip download produced {wheel.name}, which is not one of the pins; check pip's config"
            )
        pinned = spec.wheel_sha256.get(parsed.project)
        if pinned is not None and (got := sha256_file(wheel)) != pinned:
            raise ChecksumError(f"{spec.source}: [wheels.sha256].{parsed.project}: {wheel.name} has sha256 {got}, "
                                f"not the pinned {pinned}; pin the file PyPI serves or another version")
        files[parsed.project] = wheel
    if missing := sorted(set(spec.wheels) - set(files)):
        raise ToolchainError(f"pip download did not produce wheels for {', '.join(missing)}")
    install = [
        "install",
        *target,
        "--no-index",
        "--no-compile",
        "--root-user-action=ignore",
        "--target",
        str(site),
    ]
    runner.run([*pip, *install, *files.values()])
    return [
        {"name": name, "version": spec.wheels[name], "file": wheel.name, "sha256": sha256_file(wheel)}
        for name, wheel in sorted(files.items())
    ]


def precompile(spec: BedSpec, root: Path, python: Path, site: Path, qemu: Path) -> None:
    """Write .pyc files once, so each emulated start does not recompile the stdlib (~3x faster startup).

    The host's python does it when it is the guest's version (same bytecode magic); otherwise the guest.
    """
    dirs = [str(root / "usr" / "lib" / f"python{spec.python}"), str(site)]
    if f"{sys.version_info.major}.{sys.version_info.minor}" == spec.python:
        runner.run([sys.executable, "-m", "compileall", "-q", "-j0", *dirs])
        return
    outcome = run_guest(root, python, spec.smoke_cpu, ["-m", "compileall", "-q", *dirs], qemu=qemu)
    if outcome.returncode != 0:
        raise LlamaWheelsError(f"compileall in the new sysroot failed: {' | '.join(outcome.tail[-3:])}")


def smoke(spec: BedSpec, root: Path, python: Path, site: Path, qemu: Path) -> dict[str, Any]:
    outcome = run_guest(
        root, python, spec.smoke_cpu, ["-c", _SMOKE, *spec.smoke_imports], qemu=qemu, pythonpath=[site],
        timeout=300,
    )
    found = reported(outcome.tail, "SMOKE")
    if outcome.returncode != 0 or not found:
        how = outcome.signal_name or f"exit {outcome.returncode}"
        raise ConfigError(
            f"{spec.source}: the new sysroot's python fails the [smoke] imports on {spec.smoke_cpu} ({how}): "
            f"{outcome.tail[-1] if outcome.tail else 'no output'}; add the Debian package or wheel for it"
        )
    report: dict[str, Any] = found[-1]
    resolved = root.resolve()
    outside = [
        f"{name} from {where}"
        for name, where in report["modules"].items()
        if where is not None and not Path(where).resolve().is_relative_to(resolved)
    ]
    outside += [
        f"sys.path entry {entry}"
        for entry in report["path"]
        if entry and not Path(entry).resolve().is_relative_to(resolved)
    ]
    if outside:
        raise LlamaWheelsError(f"the guest python reaches outside its sysroot: {'; '.join(outside)}")
    return report


def tree_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            if not path.is_symlink():
                total += path.stat().st_size
    return total
