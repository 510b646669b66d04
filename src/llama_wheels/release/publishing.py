"""``llama-wheels release plan|draft|assets|index|notes|publish``: everything a release decides.

The release workflow only moves bytes and calls these commands, in this order (release.yml's jobs):

    plan     what this tag builds that is not yet published (pin x target x build number)
    draft    the tag's release as a draft (users see nothing yet)
    assets   the wheels as assets ``<target>--<wheel>``: a file already published with the same bytes is
             not uploaded again, a rebuilt file whose bytes differ is reported in one line and the
             published one kept, a re-run uploads only what is missing
    index    the PEP 503 index from every release's assets, each earlier asset verified against the sha256
             the previous (deployed) index published: a tampered asset is refused, naming it and both sha256
    notes    pins, targets, the matrix summary and the sha256 of every asset
    publish  the draft made public, last: until then a failed step is re-run, never half published

Published bytes never change; a rebuild never blocks a release (the published file stays); a deliberate
rebuild is a ``build = N`` bump in build_config/pins.toml (a new file name). Every command reads and writes
local directories and a release store (``store.py``: GitHub, or a directory standing in for it).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_wheels.binaries.record import read_record, require_record
from llama_wheels.binaries.wheel import parse_wheel_name
from llama_wheels.config import Config
from llama_wheels.core.cache import sha256_file
from llama_wheels.core.errors import UserError
from llama_wheels.plan import BuildJob, published_jobs
from llama_wheels.release.index import DIGESTS, IndexedWheel, parse_digests, read_wheel, write_index
from llama_wheels.release.store import Release, Releases

SEP = "--"  # asset name = <target>--<wheel>: targets of one platform share a wheel file name
REPORTS = ("matrix.json", "matrix.txt")  # the emulated matrix's report, attached to each release


def asset_name(target: str, wheel: str) -> str:
    return f"{target}{SEP}{wheel}"


def split_asset(name: str) -> tuple[str, str] | None:
    """``(target, wheel file name)`` of a wheel asset, None for any other asset."""
    target, sep, wheel = name.partition(SEP)
    return (target, wheel) if sep and wheel.endswith(".whl") and parse_wheel_name(wheel) else None


def _build_tag(wheel: str) -> str:
    parsed = parse_wheel_name(wheel)
    assert parsed is not None
    return f"{parsed.build[0]}{parsed.build[1]}" if parsed.build else ""


def _release(releases: Sequence[Release], tag: str) -> Release | None:
    return next((r for r in releases if r.tag == tag), None)


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True, kw_only=True)
class Planned:
    job: BuildJob
    published: str | None  # "<tag>: <asset>" when this pin x target x build is published already

    def line(self) -> str:
        build = f" build {self.job.pin.build_tag}" if self.job.pin.build_tag else ""
        what = f"{self.job.name} (llama-cpp-python {self.job.pin.version}{build})"
        return f"published {what} in {self.published}" if self.published else f"build     {what}"


def release_plan(config: Config, releases: Sequence[Release]) -> list[Planned]:
    """Every published pin x target, each with the release that already published its wheel (if any).

    Keyed by target, version and build number, read from the asset names: a published wheel is never
    built for a new file under the same name; raising the pin's ``build`` makes it new again.
    """
    published: dict[tuple[str, str, str], str] = {}
    for release in releases:
        for name in release.assets:
            if (split := split_asset(name)) is not None:
                target, wheel = split
                parsed = parse_wheel_name(wheel)
                assert parsed is not None
                published.setdefault((target, str(parsed.version), _build_tag(wheel)), f"{release.tag}: {name}")
    return [Planned(job=job, published=published.get((job.target.name, job.pin.version, job.pin.build_tag or "")))
            for job in published_jobs(config)]


# ----------------------------------------------------------------------------- draft, publish


def draft(store: Releases, tag: str) -> str:
    release = _release(store.releases(), tag)
    if release is None:
        store.create_draft(tag)
        return f"{tag}: draft release created in {store.where}"
    if release.draft:
        return f"{tag}: draft release exists already (a re-run), {len(release.assets)} asset(s) so far"
    return f"{tag}: already published; the following steps change nothing that is published"


def publish(store: Releases, tag: str, notes: str) -> str:
    release = _release(store.releases(), tag)
    if release is None:
        raise UserError(f"{tag}: no such release in {store.where}; the draft job creates it "
                        f"(llama-wheels release draft {tag})")
    if not release.draft:
        return f"{tag}: already published"
    store.publish(tag, notes)
    return f"{tag}: published with {len(release.assets)} asset(s)"


# ----------------------------------------------------------------------------- assets


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def record_difference(old: Path, new: Path) -> str:
    """Which fields of the two wheels' provenance records differ (what changed between the builds)."""
    try:
        a, b = ({} if r is None else _flatten(r.to_data()) for r in (read_record(old), read_record(new)))
    except UserError as exc:
        return f"a record is unreadable: {exc}"
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    if not keys:
        return "records identical (a non-reproducible build step)"
    return "record differs in " + ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def wheel_assets(dist: Path) -> dict[str, Path]:
    """Every wheel under ``dist`` by its asset name (``<target>--<wheel>``, the target from its record)."""
    if not dist.is_dir():
        raise UserError(f"{dist}: no such directory; pass the directory the wheel artifacts were downloaded to")
    found: dict[str, Path] = {}
    for wheel in sorted(dist.rglob("*.whl")):
        record = require_record(wheel, "which target it was built for (its asset name)")
        name = asset_name(record.target.name, wheel.name)
        if name in found and sha256_file(found[name]) != sha256_file(wheel):
            raise UserError(f"{name}: two different files ({found[name]} and {wheel}); keep one")
        found.setdefault(name, wheel)
    if not found:
        raise UserError(f"{dist}: holds no .whl files; the wheel jobs upload them as artifacts")
    return found


def place_assets(store: Releases, tag: str, dist: Path, reports: Sequence[Path] = ()) -> list[str]:
    """Upload this tag's assets to its draft: each wheel not yet published anywhere, and the reports.

    One line per asset saying what happened. A wheel whose name an earlier release (or this draft, on a
    re-run) already has is not uploaded again: with the same bytes the line says where it is; with other
    bytes the published file stays and the line names both sha256 and what differs in the records.
    """
    wheels = wheel_assets(dist)
    releases = store.releases()
    mine = _release(releases, tag)
    if mine is None:
        raise UserError(f"{tag}: no draft release in {store.where}; the draft job creates it first "
                        f"(llama-wheels release draft {tag})")
    lines = []
    with tempfile.TemporaryDirectory(prefix="llama-wheels-assets-") as tmp:
        for name, wheel in wheels.items():
            ours = sha256_file(wheel)
            holder = next((r for r in releases if name in r.assets), None)
            if holder is None:
                if not mine.draft:
                    raise UserError(f"{tag}: already published, and {name} is not in it; a published release "
                                    "never changes: cut a new tag")
                named = Path(tmp) / "upload" / name  # an asset is named as the file uploaded
                named.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(wheel, named)
                store.upload(tag, named)
                lines.append(f"uploaded  {name} sha256 {ours}")
                continue
            theirs = holder.assets[name] or sha256_file(store.download(holder.tag, name, Path(tmp) / holder.tag))
            if theirs == ours:
                lines.append(f"present   {name} in {holder.tag} with the same bytes")
                continue
            asset = store.download(holder.tag, name, Path(tmp) / holder.tag)
            published = asset.rename(asset.with_name(wheel.name))  # read under its wheel's own file name
            lines.append(f"kept      {name} as {holder.tag} has it (sha256 {theirs}); this build's sha256 {ours} "
                         f"differs ({record_difference(published, wheel)}); not uploaded. For a deliberate "
                         "rebuild raise the pin's build = N in build_config/pins.toml")
        for report in reports:
            if not report.is_file():
                raise UserError(f"{report}: no such file; the matrix job writes it")
            if mine.draft:
                store.upload(tag, report, replace=True)
                lines.append(f"uploaded  {report.name} (report)")
    return lines


# ----------------------------------------------------------------------------- index


def fetch_digests(previous: str) -> dict[tuple[str, str], str] | None:
    """The previous index's ``digests.json`` at URL or directory ``previous``; None where there is none."""
    if "://" not in previous:
        path = Path(previous) / DIGESTS
        return parse_digests(path.read_text(), str(path)) if path.is_file() else None
    url = previous.rstrip("/") + "/" + DIGESTS
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return parse_digests(response.read().decode(), url)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise UserError(f"{url}: HTTP {exc.code}; the previous index must be readable to verify it") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"{url}: unreachable ({exc}); the previous index must be readable to verify it") from None


def indexed_releases(releases: Sequence[Release], tag: str) -> list[Release]:
    """What the index serves: every published release and this tag's draft; another tag's draft (a release
    abandoned before it was published) is not public, so neither are its wheels."""
    return [r for r in releases if not r.draft or r.tag == tag]


def collect_published(store: Releases, releases: Sequence[Release], work: Path) -> list[tuple[str, Path]]:
    """Every wheel asset of ``releases``, downloaded under ``work`` as ``<tag>/<target>/<wheel>``, with its
    label ``<tag>/<asset name>``."""
    found = []
    for release in releases:
        for name in release.assets:
            if (split := split_asset(name)) is None:
                continue
            target, wheel = split
            path = store.download(release.tag, name, work / "download" / release.tag)
            placed = work / "wheels" / release.tag / target / wheel
            placed.parent.mkdir(parents=True, exist_ok=True)
            path.rename(placed)
            found.append((f"{release.tag}/{name}", placed))
    return found


def verify_published(assets: Sequence[tuple[str, Path]], previous: dict[tuple[str, str], str] | None,
                     where: str, releases: Sequence[Release], *, left_out: Sequence[Release] = ()
                     ) -> list[IndexedWheel]:
    """The wheels the index serves, each (family, file name) once, every file of the previous index
    present with the sha256 it published. Raises UserError naming the file and both sha256 otherwise.

    The bytes are compared before the wheel is read: a tampered file is refused as such, however broken.
    ``left_out``: the drafts of other tags, not indexed; a file the index serves only from one of them (its
    release deployed Pages and then failed) is named with that draft, to be published first.
    """
    if previous is None:
        earlier = [r.tag for r in releases if not r.draft and any(split_asset(n) for n in r.assets)]
        if earlier:
            raise UserError(f"{where}: no {DIGESTS} there, but {', '.join(earlier)} published wheels; the previous "
                            "index must be readable to verify them (is Pages deployed? `llama-wheels release doctor`)")
        previous = {}
    by_name: dict[str, dict[str, str]] = {}
    for (family, name), digest in previous.items():
        by_name.setdefault(name, {})[digest] = family
    chosen: dict[tuple[str, str], tuple[str, IndexedWheel]] = {}
    for label, path in assets:
        digest = sha256_file(path)

        def tampered(published: str, path: Path = path, label: str = label, digest: str = digest) -> UserError:
            return UserError(f"{path.name}: release asset {label} has sha256 {digest}, but the index published "
                             f"sha256 {published}; a published file never changes: restore the asset from the "
                             "published index, then run again")

        try:
            wheel = read_wheel(path)
        except UserError:  # unreadable: tampered if the index published that name with other bytes
            if path.name in by_name and digest not in by_name[path.name]:
                raise tampered(", ".join(f"{d} ({f} index)" for d, f in by_name[path.name].items())) from None
            raise
        key = (wheel.family, wheel.filename)
        if key in previous and digest != previous[key]:
            raise tampered(f"{previous[key]} ({wheel.family} index)")
        first = chosen.setdefault(key, (label, wheel))
        if first[1].sha256 != wheel.sha256:
            raise UserError(f"{wheel.filename}: release assets {first[0]} (sha256 {first[1].sha256}) and {label} "
                            f"(sha256 {wheel.sha256}) differ under one name; keep the one published first")
    missing = sorted(set(previous) - set(chosen))
    if missing:
        family, name = missing[0]
        drafts = [r.tag for r in left_out if any((split_asset(asset) or ("", ""))[1] == name for asset in r.assets)]
        if drafts:
            raise UserError(f"{name}: the {family} index serves it since the release of {drafts[0]} deployed "
                            f"Pages, but {drafts[0]} is still a draft; run {drafts[0]}'s release again to publish "
                            "it, then this one")
        raise UserError(f"{name}: the {family} index published it (sha256 {previous[missing[0]]}) but no release "
                        "asset has it any more; restore the asset, a published file is never withdrawn")
    return [wheel for _, wheel in chosen.values()]


def release_index(store: Releases, tag: str, previous: str | None, out: Path) -> dict[str, list[IndexedWheel]]:
    """The index of every published release's wheels and ``tag``'s into ``out``, verified against the index
    at ``previous``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    releases = store.releases()
    with tempfile.TemporaryDirectory(prefix="llama-wheels-release-index-", dir=out.parent) as tmp:
        indexed = indexed_releases(releases, tag)
        assets = collect_published(store, indexed, Path(tmp))
        if not assets:
            raise UserError(f"{store.where}: no release has a wheel asset; run `llama-wheels release assets` first")
        digests = fetch_digests(previous) if previous else None
        wheels = verify_published(assets, digests, previous or "no previous index given (--previous)", releases,
                                  left_out=[r for r in releases if r not in indexed])
        return write_index(wheels, out)


# ----------------------------------------------------------------------------- notes


def release_notes(config: Config, store: Releases, tag: str, matrix: Path | None) -> str:
    """The release's notes: pins, targets, the matrix summary, sha256 of every asset of the release."""
    release = _release(store.releases(), tag)
    if release is None:
        raise UserError(f"{tag}: no such release in {store.where}; the draft job creates it")
    jobs = published_jobs(config)
    pins = list({job.pin.name: job.pin for job in jobs}.values())
    lines = [f"# {tag}", "", "## Pins (llama-cpp-python versions published side by side)", ""]
    lines += [f"- `{p.name}`: llama-cpp-python {p.version} (llama.cpp {p.llama_cpp_commit})"
              + (f", build {p.build_tag}" if p.build_tag else "") for p in pins]
    lines += ["", "## Targets", ""]
    lines += [f"- `{job.name}` ({job.target.index} index): {job.target.description}" for job in jobs]
    lines += ["", "## Emulated CPU matrix", ""]
    if matrix is not None:
        if not matrix.is_file():
            raise UserError(f"{matrix}: no such file; the matrix job writes matrix.json")
        cells = json.loads(matrix.read_text())["cells"]
        ok = [c for c in cells if c["verdict"] in ("pass", "unsupported")]
        cpus = sorted({c["cpu"] for c in cells})
        lines.append(f"{len(ok)}/{len(cells)} cells ok on {len(cpus)} CPU class(es): {', '.join(cpus)} "
                     "(matrix.txt has the table).")
    else:
        lines.append("not run for this release.")
    lines += ["", "## Assets (sha256)", ""]
    with tempfile.TemporaryDirectory(prefix="llama-wheels-notes-") as tmp:
        for name, digest in sorted(release.assets.items()):
            digest = digest or sha256_file(store.download(tag, name, Path(tmp)))
            lines.append(f"- `{name}` `{digest}`")
    return "\n".join(lines) + "\n"
