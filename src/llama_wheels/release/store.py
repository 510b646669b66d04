"""Where releases live: the repository's GitHub releases (through the ``gh`` CLI), or a local directory
standing in for them (the rehearsal, a dry run).

The release commands (``publishing.py``) decide; a store only lists, downloads, creates a draft, uploads
one asset and publishes. Both stores keep the rules GitHub keeps: a tag has one release, an asset name is
unique within a release, and a draft is invisible to users until it is published.

A directory store is ``ROOT/<tag>/release.json`` (``{"draft": bool, "notes": str, "created": ns}``) and
``ROOT/<tag>/assets/<name>``; every write is atomic, so a run killed between two steps leaves each
release either with or without an asset, never with half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from llama_wheels.core import runner
from llama_wheels.core.cache import atomic_path, sha256_file
from llama_wheels.core.errors import LlamaWheelsError, UserError

# The environment variable naming the store when --releases is not given: "github" on the runners
# (the generated workflows set it), a directory in a rehearsal.
ENV = "LLAMA_WHEELS_RELEASES"
GITHUB = "github"
RELEASE_FILE = "release.json"


@dataclass(frozen=True, kw_only=True)
class Release:
    tag: str
    draft: bool
    assets: dict[str, str | None]  # asset name -> sha256 (None: the store does not know without a download)


class Releases(Protocol):
    """A repository's releases."""

    @property
    def where(self) -> str:
        """How messages name the store (a directory, or ``GitHub releases of OWNER/REPO``)."""
        ...

    def releases(self) -> list[Release]:
        """Every release, drafts included, oldest first."""
        ...

    def download(self, tag: str, name: str, dest: Path) -> Path:
        """Asset ``name`` of ``tag`` as the file ``dest/name``."""
        ...

    def create_draft(self, tag: str) -> None: ...

    def upload(self, tag: str, path: Path, *, replace: bool = False) -> None:
        """Add ``path`` as the asset ``path.name``; ``replace`` only for a draft's own report files."""
        ...

    def publish(self, tag: str, notes: str) -> None: ...

    def pages_url(self) -> str | None:
        """Where the repository's Pages site (the deployed index) is served; None when the store cannot tell."""
        ...


class DirectoryReleases:
    """Releases as a local directory (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def where(self) -> str:
        return str(self.root)

    def _meta(self, tag: str) -> dict[str, object]:
        data = json.loads((self.root / tag / RELEASE_FILE).read_text())
        if not isinstance(data, dict):
            raise UserError(f"{self.root / tag / RELEASE_FILE}: not a release record")
        return data

    def _write_meta(self, tag: str, data: dict[str, object]) -> None:
        with atomic_path(self.root / tag / RELEASE_FILE) as tmp:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")

    def releases(self) -> list[Release]:
        if not self.root.is_dir():
            return []
        found = []
        for release in self.root.iterdir():
            if not (release / RELEASE_FILE).is_file():
                continue
            assets = release / "assets"
            meta = self._meta(release.name)
            found.append((int(str(meta.get("created", 0))), release.name, Release(
                tag=release.name, draft=bool(meta.get("draft")),
                assets={a.name: sha256_file(a) for a in sorted(assets.iterdir())} if assets.is_dir() else {})))
        return [r for _, _, r in sorted(found)]

    def download(self, tag: str, name: str, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.root / tag / "assets" / name, dest / name)
        return dest / name

    def create_draft(self, tag: str) -> None:
        if not (self.root / tag / RELEASE_FILE).is_file():
            (self.root / tag).mkdir(parents=True, exist_ok=True)
            self._write_meta(tag, {"draft": True, "notes": "", "created": time.time_ns()})

    def upload(self, tag: str, path: Path, *, replace: bool = False) -> None:
        final = self.root / tag / "assets" / path.name
        if final.exists() and not replace:
            raise LlamaWheelsError(f"{tag}: asset {path.name} already exists")  # what GitHub answers
        final.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(final) as tmp:
            shutil.copyfile(path, tmp)

    def publish(self, tag: str, notes: str) -> None:
        self._write_meta(tag, {**self._meta(tag), "draft": False, "notes": notes})

    def pages_url(self) -> str | None:
        return None


class GitHubReleases:
    """The repository's GitHub releases through ``gh`` (``GH_REPO`` and ``GH_TOKEN`` from the environment).

    Asset digests come from the REST API's ``digest`` field (``sha256:...``); an asset uploaded before
    GitHub recorded digests reads as unknown and is downloaded to be compared.
    """

    def __init__(self) -> None:
        self.gh = runner.require_tool("gh", "the GitHub CLI; on GitHub's runners it is preinstalled")
        self.repo = os.environ.get("GH_REPO", "")
        if not self.repo:
            raise UserError("GH_REPO is not set: the release commands on GitHub need GH_REPO=OWNER/REPO "
                            "(the generated workflows set it) and GH_TOKEN")

    @property
    def where(self) -> str:
        return f"GitHub releases of {self.repo}"

    def _gh(self, *args: str) -> str:
        return runner.run([self.gh, *args], capture=True, timeout=900)

    def releases(self) -> list[Release]:
        pages = json.loads(self._gh("api", "--paginate", "--slurp", f"repos/{self.repo}/releases?per_page=100"))
        found = [r for page in pages for r in page]
        found.sort(key=lambda r: (r.get("created_at") or "", r["tag_name"]))
        return [Release(tag=r["tag_name"], draft=bool(r["draft"]),
                        assets={a["name"]: (a.get("digest") or "").removeprefix("sha256:") or None
                                for a in r.get("assets", [])})
                for r in found]

    def download(self, tag: str, name: str, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        self._gh("release", "download", tag, "--pattern", name, "--dir", str(dest), "--clobber")
        return dest / name

    def create_draft(self, tag: str) -> None:
        self._gh("release", "create", tag, "--draft", "--verify-tag", "--title", tag, "--notes", "")

    def upload(self, tag: str, path: Path, *, replace: bool = False) -> None:
        self._gh("release", "upload", tag, str(path), *(["--clobber"] if replace else []))

    def publish(self, tag: str, notes: str) -> None:
        with tempfile.TemporaryDirectory(prefix="llama-wheels-notes-") as tmp:
            notes_file = Path(tmp) / "notes.md"
            notes_file.write_text(notes)
            self._gh("release", "edit", tag, "--draft=false", "--notes-file", str(notes_file))

    def pages_url(self) -> str | None:
        outcome = runner.probe([self.gh, "api", f"repos/{self.repo}/pages", "--jq", ".html_url"], capture=True,
                               timeout=120)
        if outcome.returncode != 0:
            raise UserError(f"{self.repo}: Pages is not enabled or not readable ({runner.telling_line(outcome.tail)}); "
                            "set Settings -> Pages -> Source to GitHub Actions (`llama-wheels release doctor`)")
        return outcome.output.strip()


def open_store(spec: str | None) -> Releases:
    """``--releases``: ``github``, or a directory standing in for the releases; default $LLAMA_WHEELS_RELEASES."""
    spec = spec or os.environ.get(ENV)
    if not spec:
        raise UserError(f"no release store: pass --releases DIR (a directory standing in for the repository's "
                        f"releases) or --releases {GITHUB}, or set {ENV}")
    if spec == GITHUB:
        return GitHubReleases()
    return DirectoryReleases(Path(spec).resolve())
