"""The instruction-counting qemu: qemu-user built here from Debian's source package with TCG plugins, and
llama-wheels' own plugin (``plugins/insn_count.c``) compiled against it (build_config/qemu.toml [build]).

``ensure_counting_qemu`` builds each once and keeps it in the cache:

- ``tools/qemu-plugin-build-<key>/``: ``qemu-aarch64``, its ``qemu-plugin.h``, ``manifest.json``. Key: the
  source package's pinned sha256s, Meson's, the configure arguments and the ninja target. Built from
  ``apt-get source`` (through the private apt configuration of ``debs``, every file checked against its pin)
  unpacked by ``dpkg-source -x`` (Debian's patches applied), configured with the pinned arguments and built
  with ``ninja TARGET`` only (388 steps), in a scratch dir of the private ``build/`` cache.
- ``tools/qemu-plugin-<key>/``: ``libinsn_count.so`` and ``manifest.json``. Key: the qemu build's key and
  the plugin source's sha256, which is compiled into the plugin and written into every JSON it makes.

Both are published atomically under a lock; a failed build leaves nothing that looks finished. A
``CountingQemu`` refuses a plugin library whose bytes or source are not the ones its manifest and this
checkout name (``check``).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_wheels.config.qemu_spec import QemuBuildSpec, load_qemu_build_spec
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache, atomic_path, hash_key, locked, sha256_file
from llama_wheels.core.errors import ChecksumError, ToolchainError, UserError
from llama_wheels.emulation import debs
from llama_wheels.emulation.qemu import checkout_root

_MANIFEST = "manifest.json"
_HEADER = "qemu-plugin.h"
PLUGIN_LIBRARY = "libinsn_count.so"
_CFLAGS = ("-shared", "-fPIC", "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter")
_BUILD_HINT = ("the instruction-counting qemu is built here: install a C compiler, ninja-build, pkg-config, "
               "libglib2.0-dev, python3-venv and dpkg-dev (scripts/bootstrap.sh does)")


@dataclass(frozen=True, kw_only=True)
class CountingQemu:
    """A plugin-capable qemu-aarch64 and the insn_count plugin built for it."""

    qemu: Path
    plugin: Path  # libinsn_count.so
    source_sha256: str  # of the plugin's C source it was compiled from
    manifest: dict[str, Any]  # the plugin's manifest (with the qemu build's under "qemu")

    def check(self, source: Path) -> None:
        """Refuse a plugin that is not ``source`` compiled by ``ensure_counting_qemu``: its library's bytes
        must be the ones its manifest records, compiled from this very source."""
        got = sha256_file(self.plugin) if self.plugin.is_file() else "missing"
        if got != self.manifest.get("library_sha256"):
            raise ChecksumError(f"{self.plugin}: sha256 {got} is not the one its manifest records "
                                f"({self.manifest.get('library_sha256')}): not the plugin llama-wheels built; "
                                f"delete {self.plugin.parent} to rebuild it")
        wanted = sha256_file(source)
        if self.source_sha256 != wanted:
            raise ChecksumError(f"{self.plugin}: compiled from a source with sha256 {self.source_sha256}, "
                                f"but {source} has {wanted}: not this checkout's plugin; rebuild it "
                                "(ensure_counting_qemu)")


def build_key(spec: QemuBuildSpec) -> str:
    return hash_key([spec.package, spec.version, spec.dsc_sha256, *(f"{n}={s}" for n, s in spec.files),
                     spec.meson_sha256, *spec.configure, spec.target, platform.machine()])


def ensure_counting_qemu(cache: Cache, spec: QemuBuildSpec | None = None) -> CountingQemu:
    """The counting qemu and plugin of ``spec`` (default: this checkout's qemu.toml), built first if needed."""
    spec = spec or load_qemu_build_spec(checkout_root())
    qemu_dir = _ensure_qemu_build(cache, spec)
    source_sha256 = sha256_file(spec.plugin)
    final = cache.dir("tools") / f"qemu-plugin-{hash_key([qemu_dir.name, source_sha256])}"
    if not (final / _MANIFEST).is_file():
        with locked(cache.dir("tools") / f".{final.name}.lock"):
            if not (final / _MANIFEST).is_file():
                _compile_plugin(spec, qemu_dir, source_sha256, final)
    manifest = json.loads((final / _MANIFEST).read_text(encoding="utf-8"))
    counting = CountingQemu(qemu=qemu_dir / spec.target, plugin=final / PLUGIN_LIBRARY,
                            source_sha256=manifest["source_sha256"], manifest=manifest)
    counting.check(spec.plugin)
    return counting


def _ensure_qemu_build(cache: Cache, spec: QemuBuildSpec) -> Path:
    final = cache.dir("tools") / f"qemu-plugin-build-{build_key(spec)}"
    if (final / _MANIFEST).is_file():
        return final
    if platform.system() != "Linux":
        raise ToolchainError(f"{spec.source}: [build] builds qemu-user, which only runs on Linux")
    for tool in ("cc", "ninja", "pkg-config"):
        runner.require_tool(tool, _BUILD_HINT)
    if runner.probe(["pkg-config", "--exists", "glib-2.0", "gmodule-2.0"]).returncode != 0:
        raise ToolchainError(f"glib-2.0 development files are missing (pkg-config glib-2.0); {_BUILD_HINT}")
    with locked(cache.dir("tools") / f".{final.name}.lock"):
        if (final / _MANIFEST).is_file():  # another process built it while we waited
            return final
        subject = f"{spec.package} {spec.version} ({spec.target}, plugins on)"
        with runner.current_log().stage("qemu-build", subject), tempfile.TemporaryDirectory(
            prefix="qemu-plugin-", dir=cache.builds
        ) as scratch_name:
            _build_qemu(cache, spec, Path(scratch_name), final)
    return final


def _build_qemu(cache: Cache, spec: QemuBuildSpec, scratch: Path, final: Path) -> None:
    log = runner.current_log()
    started = time.monotonic()
    apt, update = debs.private_apt(cache, spec.sources_line, spec.debian.arch)
    download = scratch / "download"
    download.mkdir()
    dsc_name = f"{spec.package}_{spec.version.split(':', 1)[-1]}.dsc"
    dsc = debs.fetch_source(spec.apt_name, dest=download, apt=apt, update=update,
                            pinned={dsc_name: spec.dsc_sha256, **dict(spec.files)},
                            where=f"{spec.source}: [build]",
                            entry=lambda f: f"{spec.source}: build." + (
                                "dsc_sha256" if f == dsc_name else f'files."{f}"'),
                            fix=f"to move the pin, see the header of {spec.source.name}")
    fetched = time.monotonic()
    source = scratch / "source"
    runner.run(["dpkg-source", "--no-copy", "-x", dsc, source])
    wheels = source / "python" / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    _fetch_meson(spec, wheels, scratch)
    unpacked = time.monotonic()
    build = scratch / "build"
    build.mkdir()
    # The system's python3 (its venv module makes configure's pyvenv, from the Meson wheel above).
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    runner.run([source / "configure", f"--python={python}", *spec.configure], cwd=build)
    configured = time.monotonic()
    runner.run(["ninja", "-j", str(min(os.cpu_count() or 1, 2)), spec.target], cwd=build,
               progress=f"qemu-build {spec.target}")
    built = time.monotonic()
    binary = build / spec.target
    version = runner.probe([binary, "--version"], timeout=60)
    upstream = spec.version.split(":", 1)[-1].split("+", 1)[0]  # 1:10.0.13+ds-0+deb13u1 -> 10.0.13
    if version.returncode != 0 or f"version {upstream}" not in version.output:
        raise ToolchainError(f"the built {binary} does not run or is not qemu {upstream}: "
                             f"{runner.telling_line(version.tail)}")
    with atomic_path(final, directory=True) as tmp:
        tmp.chmod(0o755)
        shutil.copy2(binary, tmp / spec.target)
        shutil.copy2(source / "include" / "qemu" / _HEADER, tmp / _HEADER)
        manifest = {
            "package": spec.package, "version": spec.version, "dsc_sha256": spec.dsc_sha256,
            "files": dict(spec.files), "meson": {spec.meson_wheel: spec.meson_sha256},
            "configure": list(spec.configure), "target": spec.target,
            "qemu_version": version.output.splitlines()[0].strip(),
            "cc": runner.probe(["cc", "--version"]).output.splitlines()[0],
            "seconds": {"fetch": round(fetched - started, 1), "unpack": round(unpacked - fetched, 1),
                        "configure": round(configured - unpacked, 1), "ninja": round(built - configured, 1),
                        "total": round(built - started, 1)},
        }
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.progress(f"qemu-build: {spec.target} with plugins in {built - started:.0f}s "
                 f"(configure {configured - unpacked:.0f}s, ninja {built - configured:.0f}s) -> {final}")


def _fetch_meson(spec: QemuBuildSpec, dest: Path, scratch: Path) -> None:
    """The pinned Meson wheel from PyPI into ``dest`` (pip checks the hash; so do we)."""
    requirement = scratch / "meson-requirement.txt"
    requirement.write_text(f"meson=={spec.meson_version} --hash=sha256:{spec.meson_sha256}\n")
    runner.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                "--only-binary", ":all:", "--require-hashes", "-r", requirement, "-d", dest])
    wheel = dest / spec.meson_wheel
    got = sha256_file(wheel) if wheel.is_file() else "missing"
    if got != spec.meson_sha256:
        raise ChecksumError(f"{wheel}: sha256 {got}, but {spec.source} [build].meson_sha256 pins "
                            f"{spec.meson_sha256}; fix the pin")


def _compile_plugin(spec: QemuBuildSpec, qemu_dir: Path, source_sha256: str, final: Path) -> None:
    if not spec.plugin.is_file():
        raise UserError(f"{spec.source}: [build].plugin {spec.plugin} does not exist; fix the path")
    glib = runner.run(["pkg-config", "--cflags", "glib-2.0"], capture=True).split()
    with runner.current_log().stage("qemu-plugin", f"{spec.plugin.name} (sha256 {source_sha256[:12]})"), \
            atomic_path(final, directory=True) as tmp:
        tmp.chmod(0o755)
        argv: list[str | os.PathLike[str]] = [
            "cc", *_CFLAGS, f'-DINSN_COUNT_SOURCE_SHA256="{source_sha256}"', f"-I{qemu_dir}", *glib,
            "-o", tmp / PLUGIN_LIBRARY, spec.plugin]
        runner.run(argv)
        manifest = {"source": str(spec.plugin.relative_to(checkout_root())) if spec.plugin.is_relative_to(
                        checkout_root()) else str(spec.plugin),
                    "source_sha256": source_sha256, "library_sha256": sha256_file(tmp / PLUGIN_LIBRARY),
                    "command": [os.fspath(a) for a in argv],
                    "qemu": json.loads((qemu_dir / _MANIFEST).read_text(encoding="utf-8")),
                    "qemu_build": qemu_dir.name}
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
