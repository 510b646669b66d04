"""Stage ``prepare``: unpack the verified sdist and apply the pin's patch series, all or nothing.

The tree is built in a temp directory and renamed into ``<cache>/src/<pin>`` only when every patch
applied. Its ``key`` hashes the sdist and each patch and is recorded, with what was applied, in
``PREPARED.json``: an edited patch prepares the tree anew and replaces the old one. The path stays the
same on purpose, so the CMake build tree and ccache keep working and only what changed recompiles.
Preparing also reads two facts from the pinned source that configuration is checked against: the
llama.cpp commit it vendors (``vendored_commit``), and every CMake option/cache variable it declares.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llama_wheels.config import Pin
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache, atomic_path, hash_key, locked, sha256_file
from llama_wheels.core.errors import ConfigError, PatchError

MANIFEST = "PREPARED.json"
_OPTION = re.compile(
    r"^\s*(?:option|cmake_dependent_option)\s*\(\s*([A-Za-z0-9_]+)"
    r"|^\s*set\s*\(\s*([A-Za-z0-9_]+)\s+[^)]*?\bCACHE\b",
    re.MULTILINE,
)
_VENDORED = re.compile(r"llama\.cpp@([0-9a-f]{7,40})")


@dataclass(frozen=True, kw_only=True)
class AppliedPatch:
    name: str
    sha256: str


@dataclass(frozen=True, kw_only=True)
class PreparedSource:
    """An unpacked, patched llama-cpp-python source tree, ready to build."""

    tree: Path
    key: str
    pin: str
    version: str
    sdist_sha256: str
    llama_cpp_commit: str
    patches: tuple[AppliedPatch, ...]
    cmake_options: frozenset[str]

    @classmethod
    def load(cls, tree: Path) -> PreparedSource:
        data = json.loads((tree / MANIFEST).read_text())
        return cls(
            tree=tree,
            key=data["key"],
            pin=data["pin"],
            version=data["version"],
            sdist_sha256=data["sdist_sha256"],
            llama_cpp_commit=data["llama_cpp_commit"],
            patches=tuple(AppliedPatch(**p) for p in data["patches"]),
            cmake_options=frozenset(data["cmake_options"]),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "key": self.key,
                "pin": self.pin,
                "version": self.version,
                "sdist_sha256": self.sdist_sha256,
                "llama_cpp_commit": self.llama_cpp_commit,
                "patches": [{"name": p.name, "sha256": p.sha256} for p in self.patches],
                "cmake_options": sorted(self.cmake_options),
            },
            indent=2,
        )


def patch_files(pin: Pin, patches_dir: Path) -> list[Path]:
    return [patches_dir / pin.version / name for name in pin.patches]


@dataclass(frozen=True)
class VendoredCommit:
    commit: str
    source: str  # where it was read, for messages


_SUBMODULE = "vendor/llama.cpp"
_FULL_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _submodule_head(tree: Path) -> str | None:
    """The commit checked out in the sdist's vendor/llama.cpp submodule, from the git metadata the sdist ships
    (``vendor/llama.cpp/.git`` -> ``gitdir: ../../.git/modules/vendor/llama.cpp`` -> ``HEAD``), or None."""
    link = tree / _SUBMODULE / ".git"
    if link.is_file():
        text = link.read_text(encoding="utf-8", errors="replace").strip()
        if not text.startswith("gitdir:"):
            return None
        gitdir = (link.parent / text.removeprefix("gitdir:").strip()).resolve()
    elif link.is_dir():
        gitdir = link.resolve()
    else:
        return None
    if not gitdir.is_relative_to(tree.resolve()) or not (gitdir / "HEAD").is_file():
        return None  # never read outside the unpacked sdist
    head = (gitdir / "HEAD").read_text(encoding="utf-8", errors="replace").strip()
    if head.startswith("ref:"):  # a branch: its commit is in refs/ or packed-refs
        ref = head.removeprefix("ref:").strip()
        loose = gitdir / ref
        if loose.is_file() and loose.resolve().is_relative_to(gitdir):
            head = loose.read_text(encoding="utf-8", errors="replace").strip()
        elif (gitdir / "packed-refs").is_file():
            packed = (gitdir / "packed-refs").read_text(encoding="utf-8", errors="replace")
            head = next((line.split()[0] for line in packed.splitlines() if line.endswith(f" {ref}")), "")
    return head if _FULL_COMMIT.match(head) else None


def vendored_commit(tree: Path, version: str) -> VendoredCommit:
    """The llama.cpp commit the sdist vendors.

    The reliable source is the submodule's own HEAD: llama-cpp-python's sdists (0.3.4 .. 0.3.36 at least)
    carry the git metadata of vendor/llama.cpp, whose HEAD is the full commit that was checked out when the
    sdist was made. A pin's ``llama_cpp_commit`` is that commit or a prefix of it. Without that metadata, the
    CHANGELOG's section for ``version`` names the newest llama.cpp update (abbreviated) as a fallback.
    """
    head = _submodule_head(tree)
    if head is not None:
        return VendoredCommit(head, f"{_SUBMODULE} submodule HEAD")
    changelog = (tree / "CHANGELOG.md").read_text(encoding="utf-8")
    start = changelog.find(f"## [{version}]")
    if start < 0:
        raise ConfigError(f"llama-cpp-python {version}: no {_SUBMODULE} git metadata and CHANGELOG.md has no "
                          f"'## [{version}]' section; cannot tell which llama.cpp it vendors")
    found = _VENDORED.search(changelog, start)
    if found is None:
        raise ConfigError(f"CHANGELOG.md of llama-cpp-python {version} names no llama.cpp commit")
    return VendoredCommit(found.group(1), "CHANGELOG.md")


def commit_matches(pinned: str, found: str) -> bool:
    """Whether a pin's (possibly abbreviated) commit and one read from the source name the same commit."""
    return found.startswith(pinned) or pinned.startswith(found)


def unpack_sdist(sdist: Path, version: str, dest: Path, wanted: Callable[[str], bool] | None = None) -> None:
    """Extract the sdist's top directory into ``dest`` (its content becomes ``dest``'s), only the paths
    (relative to that top) ``wanted`` accepts if given."""
    top = f"llama_cpp_python-{version}"
    with tarfile.open(sdist) as archive:
        members = []
        for member in archive:
            if member.name != top and not member.name.startswith(top + "/"):
                continue
            if wanted is None or member.isdir() or wanted(member.name[len(top) + 1:]):
                members.append(member)
        archive.extractall(dest, members=members, filter="data")
    inner = dest / top
    if not inner.is_dir():
        raise ConfigError(f"{sdist.name} has no {top}/ directory; is it llama-cpp-python {version}'s sdist?")
    for child in inner.iterdir():
        child.rename(dest / child.name)
    inner.rmdir()


def declared_cmake_options(tree: Path) -> frozenset[str]:
    """Every option()/cmake_dependent_option()/set(... CACHE ...) name in the source's CMake files."""
    names: set[str] = set()
    for path in [*tree.rglob("CMakeLists.txt"), *tree.rglob("*.cmake")]:
        for match in _OPTION.finditer(path.read_text(encoding="utf-8", errors="replace")):
            names.add(match.group(1) or match.group(2))
    return frozenset(names)


def apply_patch(tree: Path, patch: Path) -> None:
    """Apply one patch (paths relative to the sdist root) or raise PatchError naming patch and file."""
    # Keep git from treating an enclosing repository as the root the patch's paths are relative to.
    env = {"GIT_CEILING_DIRECTORIES": str(tree.parent)}
    args = ["git", "apply", "--whitespace=nowarn", "-p1"]
    outcome = runner.probe([*args, "--check", patch], cwd=tree, env=env)
    if outcome.returncode != 0:
        failing = re.search(r"(?:patch failed|No such file or directory|does not exist in index): ?(\S+?)(?::\d+)?$",
                            outcome.output, re.MULTILINE)
        where = f" to {failing.group(1)}" if failing else ""
        raise PatchError(
            f"patch {patch.name} does not apply{where} (llama-cpp-python {patch.parent.name}); "
            f"refresh it against the pinned source (git apply says: {outcome.tail[-1] if outcome.tail else '?'})"
        )
    runner.run([*args, patch], cwd=tree, env=env)


def source_lock(cache: Cache, pin: str) -> Path:
    """Held exclusively while a pin's tree is (re)prepared, shared while a build reads it."""
    return cache.dir("locks") / f"src-{pin}"


def prepare(pin: Pin, sdist: Path, patches_dir: Path, cache: Cache) -> PreparedSource:
    """Return the prepared tree for ``pin``, creating it atomically if the cache does not hold it."""
    patches = patch_files(pin, patches_dir)
    applied = tuple(AppliedPatch(name=p.name, sha256=sha256_file(p)) for p in patches)
    key = hash_key([pin.sdist_sha256, *(p.sha256 for p in applied)])
    final = cache.sources / pin.name
    with locked(source_lock(cache, pin.name)):
        manifest = final / MANIFEST
        if manifest.is_file() and json.loads(manifest.read_text()).get("key") == key:
            return PreparedSource.load(final)
        return _prepare(pin, sdist, patches, applied, key, final)


def _prepare(pin: Pin, sdist: Path, patches: list[Path], applied: tuple[AppliedPatch, ...], key: str,
             final: Path) -> PreparedSource:
    with atomic_path(final, directory=True) as tmp:
        unpack_sdist(sdist, pin.version, tmp)  # the tree root is the package root
        vendored = vendored_commit(tmp, pin.version)
        if not commit_matches(pin.llama_cpp_commit, vendored.commit):
            raise ConfigError(
                f"pins.{pin.name}.llama_cpp_commit is {pin.llama_cpp_commit}, but the sdist vendors "
                f"llama.cpp@{vendored.commit} ({vendored.source}); correct build_config/pins.toml"
            )
        for patch in patches:
            apply_patch(tmp, patch)
        source = PreparedSource(
            tree=final,
            key=key,
            pin=pin.name,
            version=pin.version,
            sdist_sha256=pin.sdist_sha256,
            llama_cpp_commit=pin.llama_cpp_commit,
            patches=applied,
            cmake_options=declared_cmake_options(tmp),
        )
        (tmp / MANIFEST).write_text(source.to_json())
    return source
