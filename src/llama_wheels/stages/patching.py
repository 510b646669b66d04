"""Stage ``prepare``: unpack the verified sdist and apply the pin's patch series, all or nothing.

The tree is built in a temp directory and renamed into ``<cache>/src/<pin>`` only when every patch
applied. Its ``key`` hashes the sdist and each patch and is recorded, with what was applied, in
``PREPARED.json``: an edited patch prepares the tree anew and replaces the old one. The path stays the
same on purpose, so the CMake build tree and ccache keep working and only what changed recompiles.
Preparing also reads two facts from the pinned source that configuration is checked against: the
llama.cpp commit its CHANGELOG names, and every CMake option/cache variable it declares.
"""

from __future__ import annotations

import json
import re
import tarfile
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


def vendored_commit(tree: Path, version: str) -> str:
    """The llama.cpp commit the sdist's CHANGELOG names for ``version`` (or the newest before it)."""
    changelog = (tree / "CHANGELOG.md").read_text(encoding="utf-8")
    start = changelog.find(f"## [{version}]")
    if start < 0:
        raise ConfigError(f"CHANGELOG.md of llama-cpp-python {version} has no '## [{version}]' section")
    found = _VENDORED.search(changelog, start)
    if found is None:
        raise ConfigError(f"CHANGELOG.md of llama-cpp-python {version} names no llama.cpp commit")
    return found.group(1)


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
        with tarfile.open(sdist) as archive:
            top = f"llama_cpp_python-{pin.version}"
            members = [m for m in archive.getmembers() if m.name == top or m.name.startswith(top + "/")]
            archive.extractall(tmp, members=members, filter="data")
        # Move the sdist's top directory's content up so the tree root is the package root.
        inner = tmp / top
        for child in inner.iterdir():
            child.rename(tmp / child.name)
        inner.rmdir()

        commit = vendored_commit(tmp, pin.version)
        if not (commit.startswith(pin.llama_cpp_commit) or pin.llama_cpp_commit.startswith(commit)):
            raise ConfigError(
                f"pins.{pin.name}.llama_cpp_commit is {pin.llama_cpp_commit}, but the sdist's CHANGELOG.md "
                f"says it vendors llama.cpp@{commit}; correct build_config/pins.toml"
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
