"""Debian .debs for the test bed, fetched by apt-get: the one downloader of the sysroot's arm64 packages
(through the system's apt configuration), of the pinned qemu-user and of the qemu source package the
instruction-counting qemu is built from (through a private one).

A .deb is kept only when its sha256 is the one apt's index lists for it, and, where build_config pins one,
when the index agrees with the pin first; nothing is downloaded for a pin the index contradicts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote

from llama_wheels.core import runner
from llama_wheels.core.cache import Cache, atomic_path, hash_key, locked, publish_file, sha256_file
from llama_wheels.core.errors import ChecksumError, ConfigError, ToolchainError

APT_HINT = "the test bed is made of Debian packages: run on Debian or Ubuntu with apt-get and dpkg"
_URI_LINE = re.compile(r"^'(?P<url>[^']+)' (?P<file>\S+\.deb) (?P<size>\d+) SHA256:(?P<sha256>[0-9a-f]{64})$")
_SOURCE_URI_LINE = re.compile(r"^'(?P<url>[^']+)' (?P<file>\S+) (?P<size>\d+) SHA256:(?P<sha256>[0-9a-f]{64})$")


def require_apt() -> None:
    """A ToolchainError unless apt-get, dpkg and dpkg-deb are on PATH."""
    for tool in ("apt-get", "dpkg", "dpkg-deb"):
        runner.require_tool(tool, APT_HINT)


def fetch_debs(
    names: Sequence[str],
    *,
    scratch: Path,
    where: str,
    store: Path | None = None,
    apt: Sequence[str] = (),
    update: Callable[[], object] | None = None,
    pinned: Mapping[str, str] | None = None,
    fix: str = "",
) -> list[tuple[Path, str]]:
    """The .debs apt offers for ``names`` (``NAME:ARCH`` or ``NAME:ARCH=VERSION``), each with its sha256.

    ``apt``: options for every apt-get call (a private configuration: ``private_apt``). ``update``: refreshes
    apt's index when it cannot offer a name; None when that is impossible. ``pinned``: package name -> the
    sha256 build_config requires. ``store``: where .debs are kept between runs (one with the sha256 of apt's
    index is not downloaded again); None: downloaded into ``scratch`` and gone with it. ``where`` and
    ``fix`` make the error message: the config entry that asked, and what to change in it.
    """
    require_apt()
    outcome = runner.probe(["apt-get", *apt, "download", "--print-uris", *names])
    if outcome.returncode != 0 and update is not None:
        update()  # an index older than the architecture, the package or its version
        outcome = runner.probe(["apt-get", *apt, "download", "--print-uris", *names])
    if outcome.returncode != 0:
        errors = [line for line in outcome.tail if line.startswith("E:")] or list(outcome.tail[-1:])
        raise ConfigError(f"{where}: apt-get cannot download them: {' '.join(errors)}{fix and '; ' + fix}")
    wanted = [m for m in map(_URI_LINE.match, outcome.output.splitlines()) if m]
    if len(wanted) != len(names):
        raise ToolchainError(
            f"apt-get download --print-uris listed {len(wanted)} files with SHA256 for {len(names)} packages"
        )
    for m in wanted:
        pin = (pinned or {}).get(m["file"].split("_", 1)[0])
        if pin is not None and pin != m["sha256"]:
            raise ChecksumError(f"{where}: apt's index gives {m['file']} sha256 {m['sha256']}, not the pinned "
                                f"{pin}: a wrong pin or a changed archive ({m['url']}){fix and '; ' + fix}")
    download = scratch / "debs"
    download.mkdir(exist_ok=True)
    kept = store or download
    missing = [m for m in wanted if not _cached(kept / m["file"], m["sha256"])]
    if missing:
        # apt names the file NAME_VERSION_ARCH.deb (':' of an epoch quoted as %3a): ask for exactly that.
        exact = [f"{name}:{arch.removesuffix('.deb')}={unquote(version)}"
                 for name, version, arch in (m["file"].split("_") for m in missing)]
        runner.run(["apt-get", *apt, "download", "-o", "APT::Sandbox::User=root", *exact], cwd=download)
        for m in missing:
            got = sha256_file(download / m["file"])
            if got != m["sha256"]:
                raise ChecksumError(
                    f"{m['file']}: sha256 {got} but apt's index says {m['sha256']}; run apt-get update"
                )
            if store is not None:
                publish_file(download / m["file"], store)
    return [(kept / m["file"], m["sha256"]) for m in wanted]


def fetch_source(
    name: str,
    *,
    dest: Path,
    apt: Sequence[str],
    update: Callable[[], object],
    pinned: Mapping[str, str],
    where: str,
    entry: Callable[[str], str],
    fix: str = "",
) -> Path:
    """The source package ``name`` (``NAME=VERSION``) downloaded into ``dest``; returns its .dsc.

    ``where``: the config table of the pins; ``entry``: a file name -> the config entry that pins it (for the
    error message that names the culprit).

    ``apt``/``update``: a private configuration with a deb-src line (``private_apt``). ``pinned``: file name
    -> sha256 for every file of the package, the .dsc included: apt's index must list exactly those files
    with those sha256 before anything is downloaded, and each downloaded file must have its sha256.
    """
    require_apt()
    runner.require_tool("dpkg-source", "install dpkg-dev (it unpacks Debian source packages)")
    ask = ["apt-get", *apt, "source", "--print-uris", name]
    outcome = runner.probe(ask)
    if outcome.returncode != 0:
        update()  # an index older than this version, or none yet
        outcome = runner.probe(ask)
    if outcome.returncode != 0:
        errors = [line for line in outcome.tail if line.startswith("E:")] or list(outcome.tail[-1:])
        raise ConfigError(f"{where}: apt-get cannot get source {name}: {' '.join(errors)}{fix and '; ' + fix}")
    listed = {m["file"]: m["sha256"] for m in map(_SOURCE_URI_LINE.match, outcome.output.splitlines()) if m}
    if set(listed) != set(pinned):
        raise ChecksumError(f"{where}: apt's index lists the files {sorted(listed)} for {name}, the pins are "
                            f"{sorted(pinned)}{fix and '; ' + fix}")
    for file, sha256 in sorted(listed.items()):
        if pinned[file] != sha256:
            raise ChecksumError(f"{entry(file)}: apt's index gives sha256 {sha256}, not the pinned "
                                f"{pinned[file]}: a wrong pin or a changed archive{fix and '; ' + fix}")
    runner.run(["apt-get", *apt, "-o", "APT::Sandbox::User=root", "source", "--download-only", name], cwd=dest)
    for file, sha256 in sorted(pinned.items()):
        got = sha256_file(dest / file) if (dest / file).is_file() else "missing"
        if got != sha256:
            raise ChecksumError(f"{entry(file)}: the downloaded {file} has sha256 {got}, not the pinned {sha256} "
                                "that apt's index also gives; run again")
    [dsc] = [dest / file for file in pinned if file.endswith(".dsc")]
    return dsc


def _cached(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


def private_apt(cache: Cache, sources_line: str, arch: str) -> tuple[list[str], Callable[[], object]]:
    """apt-get options for an apt configuration of its own, and the function that updates its index.

    One sources line; its lists and apt's own cache in the cache dir ``apt/KEY`` (KEY: hash of line and
    architecture); only ``arch``'s package index. The system's sources, lists and dpkg state are neither
    read for packages nor written, and no root is needed.
    """
    home = cache.dir("apt", hash_key([sources_line, arch]))
    sources = home / "sources.list"
    if not sources.is_file() or sources.read_text(encoding="utf-8") != sources_line + "\n":
        with atomic_path(sources) as tmp:
            tmp.write_text(sources_line + "\n", encoding="utf-8")
    for part in ("lists/partial", "cache/archives/partial", "sources.list.d"):
        (home / part).mkdir(parents=True, exist_ok=True)
    options = [
        *("-o", f"Dir::Etc::SourceList={sources}"),
        *("-o", f"Dir::Etc::SourceParts={home / 'sources.list.d'}"),
        *("-o", f"Dir::State::Lists={home / 'lists'}"),
        *("-o", f"Dir::Cache={home / 'cache'}"),
        *("-o", f"APT::Architectures={arch}"),
    ]

    def update() -> None:
        with locked(home / "update.lock"):
            # As root apt hands downloads to the _apt user, which cannot write into a cache under /root.
            runner.run(["apt-get", *options, "-o", "APT::Sandbox::User=root", "update"])

    return options, update
