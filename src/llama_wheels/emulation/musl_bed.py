"""The emulated musl test bed: CPython for aarch64-linux-musl, cross built with zig from Debian's source
packages, run under the pinned qemu with Debian's musl loader (build_config/musl_bed.toml).

``ensure_musl_sysroot(cache)`` returns a ``emulation.qemu.Sysroot`` (root for ``qemu -L``, python, site,
manifest, qemu), so everything that runs the glibc bed runs this one unchanged. It is built once per key
(the sha256 of musl_bed.toml's content, the zig version, this module, the guest-exec shim and the CPython
patches) into ``cache.sysroots / "musl-KEY"``: in a temp dir renamed into place, under a lock, its inputs
recorded in ``manifest.json``. A directory whose manifest does not name the key it is opened for is not
trusted: it is built again.

The build, each step logged to the run's log file with a progress line:
  1. the source packages: ``apt-get source`` through a private apt configuration (a deb-src line for the
     suite), every file refused unless its sha256 is the pinned one (apt's index first, then the file);
     ``dpkg-source --skip-patches -x``; the project patches (patches/musl-bed/) with ``patch -p1``
  2. zlib, libffi and sqlite: static, position independent libraries (``zig cc -target aarch64-linux-musl``)
  3. CPython: ``configure --host=aarch64-linux-musl`` with a build Python of the same minor version, ``make
     -j2``, ``make install DESTDIR=<bed>``; linked dynamically against musl (PT_INTERP
     /lib/ld-musl-aarch64.so.1), ctypes, zlib and _sqlite3 linked with the static libraries above
  4. the loader: Debian's musl .deb (pinned), ``dpkg -x``; lib/libc.musl-aarch64.so.1 -> ld-musl-aarch64.so.1
  5. ``sitecustomize.py`` = ``guest_exec.py`` (the guest's aarch64 child processes run under qemu too)
  6. the pinned musllinux wheels into ``site-packages``, the .pyc files, the smoke imports, and the check that
     packaging's tags of the emulated Python are musllinux ones
The compilers are shell shims that exec zig with the target (``core.runner.find_zig``, zig's cache in
the llama-wheels cache, ccache when present); nothing in these builds passes ``-march``, so the ``zigcc``
front end (whose job is translating it) is not needed, and a configure run spawns a thousand compilers.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from llama_wheels.config.musl_bed_spec import MuslBedSpec, SourcePackage, load_musl_bed_spec
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache, atomic_path, hash_key, locked, publish_file, sha256_file
from llama_wheels.core.errors import ConfigError, LlamaWheelsError, ToolchainError
from llama_wheels.emulation import debs
from llama_wheels.emulation.guest import reported
from llama_wheels.emulation.qemu import Sysroot, checkout_root, ensure_qemu, run_guest
from llama_wheels.emulation.sysroot import MANIFEST, SITE, install_wheels, precompile, smoke, write_manifest
from llama_wheels.standalone import guest_exec

LAYOUT = "1"  # bump when the bed's on-disk layout changes: every musl bed is built anew
PREFIX = "musl-"  # cache.sysroots / "musl-KEY"
_PATCHES = ("patches", "musl-bed")
_STEPS = ("sources", "zlib", "libffi", "sqlite", "cpython configure", "cpython make", "cpython install", "loader",
          "wheels", "smoke")
# The guest's packaging tags, as pip computes them (packaging runs the musl loader: guest_exec.py).
_TAGS = "import json, sysconfig; from packaging import tags; print('TAGS ' + json.dumps([sysconfig.get_platform(), " \
        "[t.platform for t in tags.sys_tags() if t.interpreter == t.abi == 'cp311'], " \
        "sysconfig.get_config_var('EXT_SUFFIX')]))"


def bed_key(spec: MuslBedSpec, zig_version: str, root: Path | None = None) -> str:
    """The bed's cache key: every input that changes what is built."""
    root = root or checkout_root()
    parts = [LAYOUT, spec.canonical, zig_version, Path(__file__).read_text(encoding="utf-8"),
             Path(guest_exec.__file__).read_text(encoding="utf-8")]
    parts += [(root.joinpath(*_PATCHES) / name).read_text(encoding="utf-8") for name in spec.patches]
    return hash_key(parts)


def ensure_musl_sysroot(cache: Cache, spec: MuslBedSpec | None = None, *, root: Path | None = None) -> Sysroot:
    """The musl bed for ``spec`` (default: this checkout's musl_bed.toml), built first if not cached."""
    root = root or checkout_root()
    spec = spec or load_musl_bed_spec(root)
    qemu = ensure_qemu(cache)
    zig = runner.find_zig()
    zig_version = runner.run([zig, "version"], capture=True).strip()
    key = bed_key(spec, zig_version, root)
    final = cache.sysroots / f"{PREFIX}{key}"
    found = open_bed(final, key, spec, qemu)
    if found is not None:
        return found
    with locked(cache.sysroots / f".{PREFIX}{key}.lock"):
        found = open_bed(final, key, spec, qemu)  # another process may have built it while we waited
        if found is not None:
            return found
        subject = f"musl bed {key} (CPython {spec.sources[f'python{spec.python}'].version}, {spec.zig_target})"
        with runner.current_log().stage("sysroot", subject), atomic_path(final, directory=True) as tmp:
            _build(cache, spec, tmp, qemu, zig=zig, zig_version=zig_version, key=key, root=root)
    found = open_bed(final, key, spec, qemu)
    assert found is not None, final
    return found


def open_bed(bed: Path, key: str, spec: MuslBedSpec, qemu: Path) -> Sysroot | None:
    """The bed at ``bed`` if its manifest says it was built from exactly these inputs, else None."""
    try:
        manifest = json.loads((bed / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    python = bed / "usr" / "bin" / f"python{spec.python}"
    if not isinstance(manifest, dict) or manifest.get("key") != key or manifest.get("layout") != LAYOUT \
            or not python.is_file():
        return None
    return Sysroot(root=bed, python=python, site=bed / SITE, manifest=manifest, qemu=qemu)


def _build(cache: Cache, spec: MuslBedSpec, bed: Path, qemu: Path, *, zig: Path, zig_version: str, key: str,
           root: Path) -> None:
    started = time.monotonic()
    log = runner.current_log()
    debs.require_apt()
    runner.require_tool("dpkg-source", "apt-get install dpkg-dev (it unpacks Debian source packages)")
    runner.require_tool("patch", "apt-get install patch")
    runner.require_tool("make", "apt-get install make")
    runner.require_tool("tclsh", "apt-get install tcl (sqlite generates its amalgamation with it)")
    host_cc = runner.require_tool("gcc", "apt-get install gcc (sqlite builds its lemon parser generator here)")
    build_python = _build_python(spec.python)
    step = iter(range(1, len(_STEPS) + 1))

    def progress(name: str) -> None:
        log.progress(f"musl-bed step {next(step)}/{len(_STEPS)}: {name} ({log.elapsed:.0f}s into the run)")

    with tempfile.TemporaryDirectory(prefix=".scratch-musl-", dir=cache.sysroots) as scratch_name:
        scratch = Path(scratch_name)
        progress("sources")
        sources = {name: _source_tree(cache, spec, package, scratch) for name, package in spec.sources.items()}
        python_src = sources[f"python{spec.python}"]
        for patch in spec.patches:
            runner.run(["patch", "-p1", "--forward", "--batch", "-i", root.joinpath(*_PATCHES) / patch],
                       cwd=python_src)
        env = _compiler_env(cache, spec, scratch / "bin", zig, zig_version)
        deps = scratch / "deps"
        progress("zlib")
        runner.run(["./configure", "--static", f"--prefix={deps}"], cwd=sources["zlib"],
                   env={**env, "CHOST": spec.zig_target, "CFLAGS": "-O2 -fPIC"})
        runner.run(["make", "-j2", "libz.a"], cwd=sources["zlib"], env=env)
        runner.run(["make", "install"], cwd=sources["zlib"], env=env)
        progress("libffi")
        runner.run(["./configure", f"--host={spec.zig_target}", f"--build={_build_triplet()}", f"--prefix={deps}",
                    "--disable-shared", "--enable-static", "--with-pic", "--disable-docs",
                    "--disable-multi-os-directory", "--disable-exec-static-tramp"],
                   cwd=sources["libffi"], env={**env, "CFLAGS": "-O2 -fPIC"})
        runner.run(["make", "-j2"], cwd=sources["libffi"], env=env)
        runner.run(["make", "install"], cwd=sources["libffi"], env=env)
        progress("sqlite")
        sqlite = sources["sqlite3"]
        runner.run(["./configure", f"--host={spec.zig_target}", f"--build={_build_triplet()}", f"--prefix={deps}",
                    "--disable-shared", "--enable-static", "--with-pic", "--disable-tcl", "--disable-readline",
                    "--disable-editline", f"BCC={host_cc}"], cwd=sqlite, env={**env, "CFLAGS": "-O2 -fPIC"})
        runner.run(["make", "-j2", "libsqlite3.la"], cwd=sqlite, env=env)
        shutil.copyfile(sqlite / ".libs" / "libsqlite3.a", deps / "lib" / "libsqlite3.a")
        for header in ("sqlite3.h", "sqlite3ext.h"):
            shutil.copyfile(sqlite / header, deps / "include" / header)

        progress("cpython configure")
        objdir = scratch / "cpython-build"
        objdir.mkdir()
        site_file = objdir / "config.site"
        site_file.write_text("".join(f"{k}={v}\n" for k, v in sorted(spec.cache_vars.items())), encoding="utf-8")
        configure = _configure_args(spec, build_python, deps, env)
        runner.run([python_src / "configure", *configure], cwd=objdir,
                   env={**env, "CONFIG_SITE": str(site_file), "PKG_CONFIG": "false"})
        progress("cpython make")
        missing = _failed_modules(runner.run(["make", "-j2"], cwd=objdir, env=env, capture=True))
        if missing:
            raise LlamaWheelsError(f"the musl CPython build failed to build {', '.join(missing)} "
                                   f"(full log: {log.path})")
        progress("cpython install")
        # --disable-test-modules also leaves CPython's own test suite (Lib/test) out of the install.
        runner.run(["make", "install", f"DESTDIR={bed}"], cwd=objdir, env=env)

        progress("loader")
        loader = _install_loader(cache, spec, bed, scratch)
        stdlib = bed / "usr" / "lib" / f"python{spec.python}"
        shutil.copyfile(guest_exec.__file__, stdlib / "sitecustomize.py")

        progress("wheels")
        python = bed / "usr" / "bin" / f"python{spec.python}"
        site = bed / SITE
        wheels = install_wheels(spec, site, scratch / "wheels")
    precompile(spec, bed, python, site, qemu)
    progress("smoke")
    guest = smoke(spec, bed, python, site, qemu)
    tags = _tags(spec, bed, python, site, qemu)
    manifest = {
        "key": key,
        "layout": LAYOUT,
        "spec": spec.data,
        "inputs": {
            "zig": zig_version,
            "build_module_sha256": sha256_file(Path(__file__)),
            "guest_exec_sha256": sha256_file(Path(guest_exec.__file__)),
            "patches": {name: sha256_file(root.joinpath(*_PATCHES) / name) for name in spec.patches},
            "sources": {p.name: {"version": p.version, "files": dict(p.files)} for p in spec.sources.values()},
            "loader": loader,
            "build_python": runner.run([build_python, "-c", "import sys; print(sys.version.split()[0])"],
                                       capture=True).strip(),
            "configure": configure,
            "config_site": dict(spec.cache_vars),
        },
        "python": {"path": str(python.relative_to(bed)), "version": guest["version"], "platform": tags[0],
                   "tags": tags[1]},
        "modules": sorted(p.name.split(".")[0] for p in (stdlib / "lib-dynload").glob("*.so")),
    }
    write_manifest(bed, manifest, wheels, started)


def _build_python(version: str) -> Path:
    """A Python of the guest's minor version on this machine (CPython's cross build runs it)."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return Path(sys.executable)
    found = shutil.which(f"python{version}")
    if found is None:
        raise ToolchainError(f"cross building CPython {version} needs a python{version} on this machine "
                             f"(--with-build-python); install one or run llama-wheels with it")
    return Path(found)


def _build_triplet() -> str:
    return f"{os.uname().machine}-pc-linux-gnu"


def _configure_args(spec: MuslBedSpec, build_python: Path, deps: Path, compilers: dict[str, str]) -> list[str]:
    env = {
        "READELF": "true",
        "CFLAGS": spec.cflags, "OPT": spec.opt, "CPPFLAGS": f"-I{deps}/include", "LDFLAGS": f"-L{deps}/lib -dynamic",
        "LIBFFI_CFLAGS": f"-I{deps}/include", "LIBFFI_LIBS": f"-L{deps}/lib -lffi",
        "ZLIB_CFLAGS": f"-I{deps}/include", "ZLIB_LIBS": f"-L{deps}/lib -lz",
        "LIBSQLITE3_CFLAGS": f"-I{deps}/include", "LIBSQLITE3_LIBS": f"-L{deps}/lib -lsqlite3",
    }
    return [f"--host={spec.zig_target}", f"--build={_build_triplet()}", "--prefix=/usr",
            f"--with-build-python={build_python}", *spec.configure,
            *(f"{k}={compilers[k]}" for k in ("CC", "CXX", "AR", "RANLIB")), *(f"{k}={v}" for k, v in env.items())]


def _compiler_env(cache: Cache, spec: MuslBedSpec, bin_dir: Path, zig: Path, zig_version: str) -> dict[str, str]:
    """Shims cc/c++/ar/ranlib for ``spec.zig_target`` first on PATH, with zig's cache and ccache settings."""
    bin_dir.mkdir()
    launcher = shutil.which("ccache")
    quoted = shlex.quote(str(zig))
    for tool, command in (("cc", f"cc -target {spec.zig_target}"), ("c++", f"c++ -target {spec.zig_target}"),
                          ("ar", "ar"), ("ranlib", "ranlib")):
        (bin_dir / tool).write_text(f"#!/bin/sh\nexec {quoted} {command} \"$@\"\n", encoding="utf-8")
        (bin_dir / tool).chmod(0o755)
    ccache = "ccache " if launcher else ""
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}", "CC": f"{ccache}cc",
           "CXX": f"{ccache}c++", "AR": "ar", "RANLIB": "ranlib",
           "ZIG_GLOBAL_CACHE_DIR": str(cache.zig), "ZIG_LOCAL_CACHE_DIR": str(cache.zig)}
    if launcher:
        env |= {"CCACHE_DIR": str(cache.ccache), "CCACHE_NOHASHDIR": "1", "CCACHE_MAXSIZE": "5G",
                "CCACHE_COMPILERCHECK": f"string:zig-{zig_version} {spec.zig_target}"}
    return env


def _source_tree(cache: Cache, spec: MuslBedSpec, package: SourcePackage, scratch: Path) -> Path:
    """``package`` unpacked (without Debian's patches) in ``scratch``, every file verified against its pin."""
    store = cache.dir("debsrc")
    if not all(_cached(store / name, sha256) for name, sha256 in package.files.items()):
        _download_source(cache, spec, package, store, scratch)
    dsc = next(name for name in package.files if name.endswith(".dsc"))
    dest = scratch / package.name
    runner.run(["dpkg-source", "--skip-patches", "--no-copy", "-x", store / dsc, dest], cwd=scratch)
    return dest


def _cached(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


def _download_source(cache: Cache, spec: MuslBedSpec, package: SourcePackage, store: Path, scratch: Path) -> None:
    apt, update = debs.private_apt(cache, spec.sources_line("deb-src"), spec.loader.arch)
    download = scratch / f"download-{package.name}"
    download.mkdir()
    debs.fetch_source(package.apt_name, dest=download, apt=apt, update=update, pinned=package.files,
                      where=f"{package.where}.files", entry=lambda name: f'{package.where}.files."{name}"',
                      fix=f"see the header of {spec.source.name} to move the pin")
    for name in sorted(package.files):
        publish_file(download / name, store)


def _install_loader(cache: Cache, spec: MuslBedSpec, bed: Path, scratch: Path) -> dict[str, str]:
    loader = spec.loader
    apt, update = debs.private_apt(cache, spec.sources_line("deb"), loader.arch)
    [(deb, sha256)] = debs.fetch_debs(
        [loader.apt_name], scratch=scratch, store=cache.dir("debs"), apt=apt, update=update,
        pinned={loader.package: loader.sha256}, where=f"{spec.source}: [loader]",
        fix=f"to move the pin, see the header of {spec.source.name}",
    )
    runner.run(["dpkg", "-x", deb, bed])
    if not (bed / "lib").exists():  # a merged-/usr package (trixie): /lib is base-files' link to usr/lib
        (bed / "lib").symlink_to("usr/lib")
    ld = bed / "lib" / "ld-musl-aarch64.so.1"
    if not ld.exists():
        raise ConfigError(f"{spec.source}: [loader] {loader.package} {loader.version} has no "
                          "lib/ld-musl-aarch64.so.1; pin Debian's musl package for arm64")
    (ld.parent / "libc.musl-aarch64.so.1").symlink_to("ld-musl-aarch64.so.1")
    return {"package": loader.package, "version": loader.version, "arch": loader.arch, "file": deb.name,
            "sha256": sha256}


_FAILED = re.compile(r"^Failed to build these modules:$")


def _failed_modules(output: str) -> list[str]:
    """The modules setup.py reports it failed to build (a second ``make`` repeats the report)."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if _FAILED.match(line.strip()):
            names: list[str] = []
            for follow in lines[i + 1:]:
                if not follow.strip():
                    if names:
                        break
                    continue
                names += follow.split()
            return names
    return []


def _tags(spec: MuslBedSpec, bed: Path, python: Path, site: Path, qemu: Path) -> tuple[str, list[str]]:
    """The guest's sysconfig platform and first packaging tags; a LlamaWheelsError unless they are musllinux
    (packaging runs the bed's musl loader to learn its version: the loader and guest_exec.py at work) and
    extension modules are named for musl (musllinux wheels ship ``*.cpython-311-aarch64-linux-musl.so``)."""
    outcome = run_guest(bed, python, spec.smoke_cpu, ["-c", _TAGS], qemu=qemu, pythonpath=[site], timeout=300)
    found = reported(outcome.tail, "TAGS")
    if outcome.returncode != 0 or not found:
        raise LlamaWheelsError(f"packaging.tags in the new musl bed failed: {runner.telling_line(outcome.tail)}")
    platform, tags, suffix = found[-1]
    if not str(suffix).endswith("-linux-musl.so"):
        raise LlamaWheelsError(f"the new musl bed's python names extension modules *{suffix}, not "
                               "*-linux-musl.so: it cannot import musllinux wheels (see patches/musl-bed/)")
    if spec.wheel_platform not in tags or any("manylinux" in t for t in tags):
        raise LlamaWheelsError(f"the new musl bed's python is not a {spec.wheel_platform} platform for "
                               f"packaging (its cp311 platforms: {', '.join(tags) or 'none'})")
    return str(platform), [str(t) for t in tags]


def describe(manifest: dict[str, Any]) -> str:
    """One line about a built bed, from its manifest."""
    python = manifest.get("python", {})
    return (f"musl bed {manifest.get('key')}: CPython {python.get('version')} ({', '.join(python.get('tags', []))}), "
            f"{len(manifest.get('wheels', []))} wheels, {manifest.get('size_bytes', 0) / 1e6:.0f} MB, "
            f"built in {manifest.get('build_seconds')} s")

