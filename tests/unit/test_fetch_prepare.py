"""fetch and prepare: checksums, atomic downloads, patch series all-or-nothing, source facts."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_wheels.config import Pin
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import ChecksumError, ConfigError, PatchError
from llama_wheels.stages.fetch import fetch_sdist
from llama_wheels.stages.patching import prepare, unpack_sdist, vendored_commit
from tests.support.index import served

VERSION = "9.9.9"


CHANGELOG = f"# Changelog\n\n## [{VERSION}]\n\n- feat: Update llama.cpp to ggml-org/llama.cpp@abcdef1234\n"


CMAKELISTS = 'option(LLAMA_BUILD "build" ON)\nset(GGML_CPU_ARM_ARCH "" CACHE STRING "arch")\n'


def make_sdist(path: Path, files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"llama_cpp_python-{VERSION}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def fake_pin(sha256: str, patches: tuple[str, ...] = (), commit: str = "abcdef1") -> Pin:
    return Pin(name="fake", version=VERSION, sdist_sha256=sha256, llama_cpp_commit=commit,
               patches=patches, switches={})


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A PEP 691 index on loopback serving whatever is put in its directory, with given listed hashes."""
    root = tmp_path / "index"
    (root / "llama-cpp-python").mkdir(parents=True)

    with served(root) as url:
        monkeypatch.setenv("LLAMA_WHEELS_INDEX_URL", url)
        yield root


def publish(index: Path, data: bytes, listed_sha256: str) -> None:
    name = f"llama_cpp_python-{VERSION}.tar.gz"
    (index / "files").mkdir(exist_ok=True)
    (index / "files" / name).write_bytes(data)
    page = {"files": [{"filename": name, "url": f"../files/{name}", "hashes": {"sha256": listed_sha256}}]}
    (index / "llama-cpp-python" / "index.json").write_text(json.dumps(page))


def test_fetch_verifies_and_caches(tmp_path: Path, index: Path) -> None:
    data = make_sdist(tmp_path / "s.tar.gz", {"CHANGELOG.md": CHANGELOG})
    sha = hashlib.sha256(data).hexdigest()
    publish(index, data, sha)
    cache = Cache(tmp_path / "cache")
    path = fetch_sdist(fake_pin(sha), cache)
    assert path == cache.root / "sdists" / sha / f"llama_cpp_python-{VERSION}.tar.gz"
    assert path.read_bytes() == data
    (index / "files" / path.name).unlink()  # a second fetch must not need the index
    assert fetch_sdist(fake_pin(sha), cache) == path


def test_sha256_mismatch_leaves_no_file(tmp_path: Path, index: Path) -> None:
    data = make_sdist(tmp_path / "s.tar.gz", {"CHANGELOG.md": CHANGELOG})
    expected = "0" * 64
    publish(index, data, listed_sha256=expected)  # the index claims the pinned hash; the bytes differ
    cache = Cache(tmp_path / "cache")
    with pytest.raises(ChecksumError,
                       match=r"has sha256 [0-9a-f]{64}, pins.fake expects 0{64}; the download was discarded"):
        fetch_sdist(fake_pin(expected), cache)
    assert [p for p in (cache.root / "sdists").rglob("*")] == []


def test_index_listing_a_different_hash_is_refused_before_download(tmp_path: Path, index: Path) -> None:
    data = make_sdist(tmp_path / "s.tar.gz", {"CHANGELOG.md": CHANGELOG})
    publish(index, data, hashlib.sha256(data).hexdigest())
    with pytest.raises(ChecksumError, match=r"the index lists sha256 .* but pins.fake records 1{64}"):
        fetch_sdist(fake_pin("1" * 64), Cache(tmp_path / "cache"))


def _git_patch(tmp_path: Path, old: dict[str, str], new: dict[str, str], name: str) -> Path:
    """Write a real `git diff` between two small trees as patches/<VERSION>/<name>."""
    repo = tmp_path / f"repo-{name}"
    repo.mkdir()
    run = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    for rel, text in old.items():
        (repo / rel).write_text(text)
    run("add", "-A")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "old")
    for rel, text in new.items():
        (repo / rel).write_text(text)
    diff = subprocess.run(["git", "diff"], cwd=repo, check=True, capture_output=True, text=True).stdout
    out = tmp_path / "patches" / VERSION / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(diff)
    return out


def _prepared_sdist(tmp_path: Path, cache: Cache, files: dict[str, str]) -> tuple[Path, str]:
    data = make_sdist(tmp_path / f"llama_cpp_python-{VERSION}.tar.gz", files)
    return tmp_path / f"llama_cpp_python-{VERSION}.tar.gz", hashlib.sha256(data).hexdigest()


def test_patch_series_applies_and_is_recorded(tmp_path: Path) -> None:
    files = {"CHANGELOG.md": CHANGELOG, "CMakeLists.txt": CMAKELISTS, "a.py": "x = 1\n"}
    _git_patch(tmp_path, {"a.py": "x = 1\n"}, {"a.py": "x = 2\n"}, "0001-x.patch")
    cache = Cache(tmp_path / "cache")
    sdist, sha = _prepared_sdist(tmp_path, cache, files)
    source = prepare(fake_pin(sha, ("0001-x.patch",)), sdist, tmp_path / "patches", cache)
    assert (source.tree / "a.py").read_text() == "x = 2\n"
    assert [p.name for p in source.patches] == ["0001-x.patch"]
    assert {"LLAMA_BUILD", "GGML_CPU_ARM_ARCH"} <= source.cmake_options
    assert source.llama_cpp_commit == "abcdef1"


def test_failed_patch_names_patch_and_file_and_leaves_nothing(tmp_path: Path) -> None:
    files = {"CHANGELOG.md": CHANGELOG, "CMakeLists.txt": CMAKELISTS, "a.py": "x = 1\n", "b.py": "y = 1\n"}
    _git_patch(tmp_path, {"a.py": "x = 1\n"}, {"a.py": "x = 2\n"}, "0001-good.patch")
    _git_patch(tmp_path, {"b.py": "y = 5\n"}, {"b.py": "y = 6\n"}, "0002-stale.patch")  # context differs
    cache = Cache(tmp_path / "cache")
    sdist, sha = _prepared_sdist(tmp_path, cache, files)
    pin = fake_pin(sha, ("0001-good.patch", "0002-stale.patch"))
    with pytest.raises(PatchError, match=r"patch 0002-stale.patch does not apply to b.py"):
        prepare(pin, sdist, tmp_path / "patches", cache)
    assert list(cache.sources.iterdir()) == []  # no half-patched tree, not even a temp dir


def test_changelog_commit_must_match_the_pin(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    sdist, sha = _prepared_sdist(tmp_path, cache, {"CHANGELOG.md": CHANGELOG, "CMakeLists.txt": CMAKELISTS})
    with pytest.raises(ConfigError, match=r"llama_cpp_commit is 1234567, but the sdist vendors "
                                          r"llama.cpp@abcdef1234 \(CHANGELOG.md\)"):
        prepare(fake_pin(sha, commit="1234567"), sdist, tmp_path / "patches", cache)
    assert list(cache.sources.iterdir()) == []


SUBMODULE_HEAD = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(("files", "expected"), [
    # the submodule's git metadata, as llama-cpp-python's sdists ship it, wins over the CHANGELOG's prose
    ({"vendor/llama.cpp/.git": "gitdir: ../../.git/modules/vendor/llama.cpp\n",
      ".git/modules/vendor/llama.cpp/HEAD": SUBMODULE_HEAD + "\n"},
     (SUBMODULE_HEAD, "vendor/llama.cpp submodule HEAD")),
    # a HEAD on a branch: the branch's commit from packed-refs
    ({"vendor/llama.cpp/.git": "gitdir: ../../.git/modules/vendor/llama.cpp\n",
      ".git/modules/vendor/llama.cpp/HEAD": "ref: refs/heads/master\n",
      ".git/modules/vendor/llama.cpp/packed-refs": f"# pack-refs\n{SUBMODULE_HEAD} refs/heads/master\n"},
     (SUBMODULE_HEAD, "vendor/llama.cpp submodule HEAD")),
    # a gitdir pointing out of the sdist is not followed: the CHANGELOG is the fallback
    ({"vendor/llama.cpp/.git": "gitdir: ../../../../outside\n"}, ("abcdef1234", "CHANGELOG.md")),
    ({}, ("abcdef1234", "CHANGELOG.md")),
])
def test_vendored_commit_reads_the_submodule_head(tmp_path: Path, files: dict[str, str],
                                                   expected: tuple[str, str]) -> None:
    make_sdist(tmp_path / "s.tar.gz", {"CHANGELOG.md": CHANGELOG, **files})
    (tmp_path / "tree").mkdir()
    unpack_sdist(tmp_path / "s.tar.gz", VERSION, tmp_path / "tree")
    found = vendored_commit(tmp_path / "tree", VERSION)
    assert (found.commit, found.source) == expected

