"""``llama-wheels index DIST OUT``: a static package index, one per variant family.

Each wheel's family is the ``index`` of the target it was built for, read from its provenance record
(``cpu`` for runtime dispatch, ``armv8.2-dotprod``, ``armv8.0``, later ``metal``). Per family::

    OUT/<family>/simple/index.html              PEP 503 project list       (+ index.json, PEP 691)
    OUT/<family>/simple/<project>/index.html    links with #sha256=...     (+ index.json, PEP 691)
    OUT/<family>/simple/<project>/<wheel>       the wheel itself
    OUT/<family>/simple/<project>/<wheel>.metadata   its core metadata (PEP 658/714)

which is what ``pip install --extra-index-url file:///.../OUT/cpu/simple`` (or an https URL of the same tree)
expects; ``OUT/docs/`` is left to the documentation site (``llama-wheels docs build OUT/docs``, as the release's
index job does), which the landing page ``OUT/index.html`` links to. ``index.json`` is the PEP 691 form of the
page beside it, for a server that maps ``Accept: application/vnd.pypi.simple.v1+json`` onto it; pip on a static
tree reads ``index.html``.

Append-only: when OUT already is such an index, every wheel it serves stays, with its bytes and sha256,
beside the new ones; a new wheel under a published file name with other bytes is refused (a rebuild
gets a new file name through the pin's build tag). A release rebuilds its index from every release's
assets the same way (release.yml).

Atomic: the whole tree is written and checked in a temp directory beside OUT and then swapped with OUT
in one rename (``renameat2(RENAME_EXCHANGE)``; two renames where that is missing), so a failed run
leaves the previous index exactly as it was. OUT must be new, empty, or an index this command wrote
(it holds ``.llama-wheels-index``): nothing else is ever replaced.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import html
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from email.parser import HeaderParser
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from packaging.utils import canonicalize_name

from llama_wheels.binaries.record import require_record
from llama_wheels.binaries.wheel import open_wheel, wheel_name
from llama_wheels.core.cache import raise_about_final, remove, sha256_file
from llama_wheels.core.errors import LlamaWheelsError, UserError

MARKER = ".llama-wheels-index"
# What the index serves, {family: {file name: sha256}}: the next release verifies every earlier asset
# against it (release/publishing.py), fetched from the deployed site.
DIGESTS = "digests.json"
DOCS = "docs"  # OUT/docs/: the documentation site (`llama-wheels docs build`), never a variant family
API_VERSION = "1.1"
_FAMILY = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True, kw_only=True)
class IndexedWheel:
    path: Path
    family: str
    project: str  # normalized
    version: str
    sha256: str
    size: int
    requires_python: str | None
    metadata: bytes  # the wheel's METADATA file (PEP 658)

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def metadata_sha256(self) -> str:
        return hashlib.sha256(self.metadata).hexdigest()


def read_wheel(path: Path) -> IndexedWheel:
    parsed = wheel_name(path)
    family = require_record(path, "its variant family").target.index
    if not _FAMILY.match(family):
        raise UserError(f"{path.name}: variant family {family!r} is not a lowercase directory name; "
                        "fix the target's index in build_config/targets.toml")
    with open_wheel(path) as archive:
        metas = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(metas) != 1:
            raise UserError(f"{path.name}: expected one .dist-info/METADATA, found {len(metas)}")
        metadata = archive.read(metas[0])
    headers = HeaderParser().parsestr(metadata.decode("utf-8"))
    project, version = canonicalize_name(headers["Name"] or ""), headers["Version"] or ""
    if parsed.project != project or str(parsed.version) != version:
        raise UserError(f"{path.name}: file name does not match its METADATA ({headers['Name']} {version})")
    return IndexedWheel(path=path, family=family, project=project, version=version,
                        sha256=sha256_file(path), size=path.stat().st_size,
                        requires_python=headers["Requires-Python"], metadata=metadata)


def _page(title: str, body: list[str]) -> str:
    return "\n".join([
        "<!DOCTYPE html>",
        "<html>",
        "  <head>",
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">',
        f"    <title>{html.escape(title)}</title>",
        "  </head>",
        "  <body>",
        f"    <h1>{html.escape(title)}</h1>",
        *(f"    {line}" for line in body),
        "  </body>",
        "</html>",
        "",
    ])


def _json(data: dict[str, Any]) -> str:
    return json.dumps({"meta": {"api-version": API_VERSION}, **data}, indent=2, sort_keys=True) + "\n"


def _anchor(w: IndexedWheel) -> str:
    attrs = [f'href="{html.escape(w.filename)}#sha256={w.sha256}"']
    if w.requires_python:
        attrs.append(f'data-requires-python="{html.escape(w.requires_python)}"')
    # PEP 714 renamed data-dist-info-metadata; both, for pip before and after 23.2.
    attrs += [f'data-dist-info-metadata="sha256={w.metadata_sha256}"',
              f'data-core-metadata="sha256={w.metadata_sha256}"']
    return f"<a {' '.join(attrs)}>{html.escape(w.filename)}</a><br>"


def _file_json(w: IndexedWheel) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "filename": w.filename,
        "url": w.filename,
        "hashes": {"sha256": w.sha256},
        "size": w.size,
        "core-metadata": {"sha256": w.metadata_sha256},
        "dist-info-metadata": {"sha256": w.metadata_sha256},
    }
    if w.requires_python:
        entry["requires-python"] = w.requires_python
    return entry


def write_tree(root: Path, wheels: list[IndexedWheel]) -> dict[str, list[IndexedWheel]]:
    """Write the index for ``wheels`` into the empty directory ``root``; return wheels per family."""
    families: dict[str, list[IndexedWheel]] = {}
    for w in sorted(wheels, key=lambda w: (w.family, w.project, w.filename)):
        if w.family == DOCS:
            raise UserError(f"{w.filename}: its target's index is {DOCS!r}, the site's documentation folder; "
                            "give the target another index in build_config/targets.toml")
        families.setdefault(w.family, []).append(w)
    for family, members in families.items():
        simple = root / family / "simple"
        projects = sorted({w.project for w in members})
        simple.mkdir(parents=True)
        (simple / "index.html").write_text(
            _page(f"llama-wheels index: {family}", [f'<a href="{p}/">{p}</a><br>' for p in projects]))
        (simple / "index.json").write_text(_json({"projects": [{"name": p} for p in projects]}))
        for project in projects:
            files = [w for w in members if w.project == project]
            page = simple / project
            page.mkdir()
            for w in files:
                shutil.copyfile(w.path, page / w.filename)
                (page / f"{w.filename}.metadata").write_bytes(w.metadata)
            (page / "index.html").write_text(_page(f"Links for {project}", [_anchor(w) for w in files]))
            (page / "index.json").write_text(_json({
                "name": project,
                "versions": sorted({w.version for w in files}),
                "files": [_file_json(w) for w in files],
            }))
    landing = [f'<a href="{f}/simple/">{f}</a>: '
               + html.escape(install_command(f"<this URL>/{f}/simple", sorted({w.project for w in m}))) + "<br>"
               for f, m in families.items()]
    landing.append(f'<a href="{DOCS}/">documentation</a>: the guide, the reference and the measurements<br>')
    (root / "index.html").write_text(_page("llama-wheels package indexes, one per variant family", landing))
    (root / MARKER).write_text(json.dumps({f: [w.filename for w in m] for f, m in families.items()},
                                          indent=2, sort_keys=True) + "\n")
    (root / DIGESTS).write_text(json.dumps({f: {w.filename: w.sha256 for w in m} for f, m in families.items()},
                                           indent=2, sort_keys=True) + "\n")
    return families


def parse_digests(text: str, where: str) -> dict[tuple[str, str], str]:
    """An index's ``digests.json``: (family, file name) -> sha256."""
    try:
        data = json.loads(text)
        digests = {(family, name): digest for family, files in data.items() for name, digest in files.items()}
    except (ValueError, AttributeError) as exc:
        raise UserError(f"{where}: not an index's {DIGESTS} ({exc})") from None
    if not all(isinstance(d, str) and re.fullmatch(r"[0-9a-f]{64}", d) for d in digests.values()):
        raise UserError(f"{where}: not an index's {DIGESTS} (a value is not a sha256)")
    return digests


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[dict[str, str | None], str]] = []
        self.meta: dict[str, str | None] = {}
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), []
        elif tag == "meta":
            found = dict(attrs)
            self.meta[found.get("name") or ""] = found.get("content")

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.links.append((self._open, "".join(self._text)))
            self._open = None


def parse_links(page: Path) -> tuple[list[tuple[dict[str, str | None], str]], dict[str, str | None]]:
    parser = _Links()
    parser.feed(page.read_text())
    return parser.links, parser.meta


def check_tree(root: Path) -> None:
    """Raise LlamaWheelsError unless every family under ``root`` is a valid PEP 503 + PEP 691 index."""
    families = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name != DOCS]
    if not families:
        raise LlamaWheelsError(f"{root}: no variant family in the index")
    for family in families:
        simple = family / "simple"
        links, meta = parse_links(simple / "index.html")
        listed = json.loads((simple / "index.json").read_text())
        if meta.get("pypi:repository-version") != API_VERSION or listed["meta"]["api-version"] != API_VERSION:
            raise LlamaWheelsError(f"{simple}: repository version is not {API_VERSION}")
        names = [text for _, text in links]
        if names != [p["name"] for p in listed["projects"]] or any(canonicalize_name(n) != n for n in names):
            raise LlamaWheelsError(f"{simple}: project list is not normalized or HTML and JSON differ")
        for attrs, name in links:
            if attrs.get("href") != f"{name}/":
                raise LlamaWheelsError(f"{simple}/index.html: {name} links to {attrs.get('href')}")
            _check_project(simple / name, name)


def _check_project(page: Path, project: str) -> None:
    links, _ = parse_links(page / "index.html")
    data = json.loads((page / "index.json").read_text())
    if data["name"] != project or len(data["files"]) != len(links):
        raise LlamaWheelsError(f"{page}: HTML and JSON list different files")
    for (attrs, text), entry in zip(links, data["files"], strict=True):
        url = urlsplit(attrs.get("href") or "")
        algorithm, _, digest = url.fragment.partition("=")
        target = page / unquote(url.path)
        if algorithm != "sha256" or text != target.name or entry["filename"] != text:
            raise LlamaWheelsError(f"{page}/index.html: link {attrs.get('href')} ({text}) is malformed")
        if not target.is_file() or sha256_file(target) != digest or entry["hashes"]["sha256"] != digest:
            raise LlamaWheelsError(f"{page}: {text} is missing or does not have sha256 {digest}")
        metadata = hashlib.sha256((page / f"{text}.metadata").read_bytes()).hexdigest()
        declared = {attrs.get("data-core-metadata"), attrs.get("data-dist-info-metadata"),
                    *(f"sha256={entry[key]['sha256']}" for key in ("core-metadata", "dist-info-metadata"))}
        if declared != {f"sha256={metadata}"}:
            raise LlamaWheelsError(f"{page}: {text}.metadata does not match the core-metadata digests of the "
                                   "HTML and JSON pages")


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directory entries (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result: int = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


def _replace_dir(new: Path, out: Path) -> None:
    if not out.exists():
        os.rename(new, out)
    elif _exchange(new, out):
        remove(new)  # now holds the previous index
    else:
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
        os.rename(new, out)
        remove(old)


def install_command(url: str, projects: Sequence[str]) -> str:
    """How a user installs ``projects`` from the index at ``url``. An extra index, not the only one: it
    serves only our wheels, so their dependencies (numpy, jinja2, diskcache ...) come from PyPI; and
    binary-only, else pip may prefer building PyPI's sdist (or a newer one) over our wheel."""
    names = " ".join(projects)
    return f"pip install {names} --only-binary {','.join(projects)} --extra-index-url {url}"


def published_wheels(out: Path) -> list[Path]:
    """The wheels the index at ``out`` serves now (none when ``out`` does not exist yet)."""
    if not (out / MARKER).is_file():
        return []
    return sorted(out.glob("*/simple/*/*.whl"))


def merge(published: list[IndexedWheel], new: list[IndexedWheel]) -> list[IndexedWheel]:
    """Every published wheel and every new one, each (family, file name) once.

    Append-only: nothing published is dropped, and a file name keeps its bytes forever (pip caches and
    hash-pinned requirements rely on it). The same file again (a reproducible rebuild, or an earlier
    release's asset) is one entry; other bytes under a published name are refused.
    """
    merged: dict[tuple[str, str], IndexedWheel] = {}
    origin: dict[tuple[str, str], str] = {}
    for w, where in [*((w, "published") for w in published), *((w, "new") for w in new)]:
        key = (w.family, w.filename)
        first = merged.setdefault(key, w)
        origin.setdefault(key, where)
        if first.sha256 == w.sha256:
            continue
        if origin[key] == "published":
            raise UserError(f"{w.filename}: already published in the {w.family} index with sha256 "
                            f"{first.sha256[:16]}..., {w.path} has {w.sha256[:16]}...; a published file never "
                            "changes: set (or raise) the pin's build = N in build_config/pins.toml for a new "
                            "build tag")
        raise UserError(f"{w.filename}: found twice for the {w.family} index with different bytes "
                        f"({first.path} and {w.path}); keep one")
    return list(merged.values())


def build_index(dist: Path, out: Path) -> dict[str, list[IndexedWheel]]:
    """Index every wheel in ``dist`` into ``out``, beside every wheel ``out`` already serves.

    Append-only (``merge``): an index written before keeps each of its files, with the same bytes and
    sha256; the new tree replaces the old one atomically.
    """
    if not dist.is_dir():
        raise UserError(f"{dist}: no such directory; pass the directory `llama-wheels build` wrote wheels to")
    # Recursive: wheels of different families share a file name (dist/cpu/X.whl, dist/armv8.0/X.whl).
    paths = sorted(dist.rglob("*.whl"))
    if not paths:
        raise UserError(f"{dist}: holds no .whl files; build some first (llama-wheels build)")
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / MARKER).is_file())):
        raise UserError(f"{out}: exists and is not an index written by llama-wheels; choose a new directory")
    wheels = merge([read_wheel(p) for p in published_wheels(out)], [read_wheel(p) for p in paths])
    return write_index(wheels, out)


def write_index(wheels: list[IndexedWheel], out: Path) -> dict[str, list[IndexedWheel]]:
    """The index of ``wheels`` (each (family, file name) once: ``merge``) as ``out``, replaced atomically."""
    tmp: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        families = write_tree(tmp, wheels)
        check_tree(tmp)
        tmp.chmod(0o755)
        _replace_dir(tmp, out)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                remove(tmp)
        raise_about_final(exc, tmp, out)
        raise
    return families
