"""The static PEP 503/691 index: layout per variant family, validity, pip reading it, atomic replacement."""

from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename
from pypi_simple import ACCEPT_HTML_ONLY, ACCEPT_JSON_ONLY, DigestMismatchError, PyPISimple

from llama_wheels.core.errors import LlamaWheelsError, UserError
from llama_wheels.release import index as index_module
from llama_wheels.release.index import build_index, check_tree, parse_links
from tests.support.checkout import cli
from tests.support.index import pip, served, tree_digest, two_families
from tests.support.wheelfactory import MUSL_NAME, NAME, VERSION, built_wheel, package_files, raw_wheel


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    return two_families(tmp_path)



def test_layout_one_index_per_family(dist: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    families = build_index(dist, out)
    assert sorted(families) == ["armv8.2-dotprod", "cpu"]
    for family, built in (("cpu", "default"), ("armv8.2-dotprod", "dotprod")):
        project = out / family / "simple" / "llama-cpp-python"
        assert sorted(p.name for p in project.iterdir()) == sorted(
            ["index.html", "index.json", NAME, f"{NAME}.metadata"])
        assert (project / NAME).read_bytes() == (dist / built / NAME).read_bytes()
    check_tree(out)


def test_pages_follow_pep_503_and_691(dist: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    build_index(dist, out)
    simple = out / "cpu" / "simple"
    links, meta = parse_links(simple / "index.html")
    assert meta["pypi:repository-version"] == "1.1"
    assert links == [({"href": "llama-cpp-python/"}, "llama-cpp-python")]  # normalized name, trailing slash
    assert json.loads((simple / "index.json").read_text()) == {
        "meta": {"api-version": "1.1"}, "projects": [{"name": "llama-cpp-python"}]}

    page = simple / "llama-cpp-python"
    [(attrs, text)] = parse_links(page / "index.html")[0]
    digest = hashlib.sha256((page / NAME).read_bytes()).hexdigest()
    assert text == NAME
    assert attrs["href"] == f"{NAME}#sha256={digest}"
    assert attrs["data-requires-python"] == ">=3.8"  # unescaped by the parser: written as &gt;=3.8
    assert "&gt;=3.8" in (page / "index.html").read_text()
    metadata_digest = hashlib.sha256((page / f"{NAME}.metadata").read_bytes()).hexdigest()
    assert attrs["data-core-metadata"] == attrs["data-dist-info-metadata"] == f"sha256={metadata_digest}"
    data = json.loads((page / "index.json").read_text())
    assert data["meta"] == {"api-version": "1.1"} and data["name"] == "llama-cpp-python"
    assert data["versions"] == [VERSION]
    assert data["files"] == [{
        "filename": NAME, "url": NAME, "hashes": {"sha256": digest}, "requires-python": ">=3.8",
        "size": (page / NAME).stat().st_size, "core-metadata": {"sha256": metadata_digest},
        "dist-info-metadata": {"sha256": metadata_digest}}]


def test_pip_installs_from_the_index_and_checks_the_hash(dist: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    build_index(dist, out)
    url = (out / "cpu" / "simple").as_uri()
    target = ["--platform", "manylinux2014_aarch64", "--python-version", "3.11", "--implementation", "cp",
              "--only-binary=:all:", "--no-deps"]
    got = pip("download", "--index-url", url, *target, "-d", str(tmp_path / "got"),
              f"llama-cpp-python=={VERSION}")
    assert got.returncode == 0, got.stdout + got.stderr
    assert [p.name for p in (tmp_path / "got").iterdir()] == [NAME]

    page = out / "cpu" / "simple" / "llama-cpp-python" / "index.html"
    page.write_text(page.read_text().replace("#sha256=", "#sha256=0"))  # a fragment that cannot match
    bad = pip("download", "--index-url", url, *target, "-d", str(tmp_path / "bad"),
              f"llama-cpp-python=={VERSION}")
    assert bad.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in bad.stdout + bad.stderr


def system_tags(platforms: list[str]) -> list[Tag]:
    """What pip (packaging.tags.sys_tags) accepts on CPython 3.11 of a system with these platform tags, in its
    order of preference."""
    return [*cpython_tags((3, 11), platforms=platforms), *compatible_tags((3, 11), "cp311", platforms)]


# packaging's platform tags on aarch64: Alpine's musl 1.2 (_musllinux.platform_tags), Debian 12's glibc 2.36
# (_manylinux.platform_tags, with the manylinux2014 alias of 2_17); then linux_aarch64 on both.
ALPINE = [f"musllinux_1_{minor}_aarch64" for minor in (2, 1, 0)] + ["linux_aarch64"]


DEBIAN = [f"manylinux_2_{minor}_aarch64" for minor in range(36, 16, -1)] + ["manylinux2014_aarch64",
                                                                           "linux_aarch64"]


def best_file(files: list[str], tags: list[Tag]) -> str | None:
    """The file pip installs among ``files`` of one version: the one whose tags come first in ``tags``."""
    rank = {tag: i for i, tag in enumerate(tags)}
    ranked = [(min(rank[t] for t in parse_wheel_filename(f)[3] if t in rank), f) for f in files
              if any(t in rank for t in parse_wheel_filename(f)[3])]
    return min(ranked)[1] if ranked else None


def test_musl_and_glibc_wheels_side_by_side_each_system_gets_its_own(tmp_path: Path) -> None:
    """The musl target's wheel beside the glibc one in the same (cpu) index: one --extra-index-url line serves
    Alpine and Debian alike, and each system's tags select its own wheel; pip agrees."""
    dist = tmp_path / "dist"
    built_wheel(dist / "default", index="cpu", target="linux-aarch64")
    built_wheel(dist / "musl", index="cpu", target="linux-aarch64-musl", platform="linux-aarch64-musl",
                name=MUSL_NAME)
    out = tmp_path / "site"
    assert sorted(build_index(dist, out)) == ["cpu"]
    page = out / "cpu" / "simple" / "llama-cpp-python"
    files = sorted(text for _, text in parse_links(page / "index.html")[0])
    assert files == sorted([NAME, MUSL_NAME])
    assert sorted(f["filename"] for f in json.loads((page / "index.json").read_text())["files"]) == files
    assert best_file(files, system_tags(ALPINE)) == MUSL_NAME
    assert best_file(files, system_tags(DEBIAN)) == NAME
    # sabotage: without the musl wheel, Alpine finds nothing it may install (no glibc wheel is taken)
    assert best_file([NAME], system_tags(ALPINE)) is None
    url = (out / "cpu" / "simple").as_uri()
    for platform_tag, expected in (("musllinux_1_2_aarch64", MUSL_NAME), ("manylinux2014_aarch64", NAME)):
        got = pip("download", "--index-url", url, "--platform", platform_tag, "--python-version", "3.11",
                  "--implementation", "cp", "--only-binary=:all:", "--no-deps", "-d", str(tmp_path / platform_tag),
                  f"llama-cpp-python=={VERSION}")
        assert got.returncode == 0, got.stdout + got.stderr
        assert [p.name for p in (tmp_path / platform_tag).iterdir()] == [expected]


@contextmanager
def client(url: str, accept: str) -> Iterator[PyPISimple]:
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment for a loopback server
    with session, PyPISimple(url, session=session, accept=accept) as simple:
        yield simple


def wheel_metadata(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return archive.read(name)


@pytest.mark.parametrize("accept", [ACCEPT_HTML_ONLY, ACCEPT_JSON_ONLY], ids=["html", "pep691-json"])
def test_a_real_client_reads_every_page(dist: Path, tmp_path: Path, accept: str) -> None:
    """pypi-simple, a client that is not ours, reads the pages; what it finds is what the wheels hold."""
    out = tmp_path / "site"
    build_index(dist, out)
    built = {"cpu": dist / "default" / NAME, "armv8.2-dotprod": dist / "dotprod" / NAME}
    with served(out) as url:
        for family, wheel in built.items():
            with client(f"{url}/{family}/simple/", accept) as simple:
                index = simple.get_index_page()
                assert index.projects == ["llama-cpp-python"]
                assert index.repository_version == "1.1"
                page = simple.get_project_page("llama-cpp-python")
                assert page.repository_version == "1.1"
                [pkg] = page.packages
                metadata = wheel_metadata(wheel)
                assert (pkg.filename, pkg.project, pkg.version, pkg.package_type) == (
                    NAME, "llama_cpp_python", VERSION, "wheel")
                assert pkg.url == f"{url}/{family}/simple/llama-cpp-python/{NAME}"
                assert pkg.digests == {"sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()}
                assert pkg.requires_python == ">=3.8"
                assert pkg.has_metadata
                assert pkg.metadata_digests == {"sha256": hashlib.sha256(metadata).hexdigest()}
                assert not pkg.is_yanked and not pkg.has_sig
                if accept == ACCEPT_JSON_ONLY:  # only PEP 691 carries these
                    assert pkg.size == wheel.stat().st_size
                    assert page.versions == [VERSION]
                # both verify the digests of the page against what they download
                simple.download_package(pkg, tmp_path / "got" / family / NAME)
                assert (tmp_path / "got" / family / NAME).read_bytes() == wheel.read_bytes()
                assert simple.get_package_metadata(pkg).encode() == metadata


def _other_digest(text: str, digest: str) -> str:
    assert digest in text
    return text.replace(digest, hashlib.sha256(b"another file").hexdigest())


@pytest.mark.parametrize("accept", [ACCEPT_HTML_ONLY, ACCEPT_JSON_ONLY], ids=["html", "pep691-json"])
@pytest.mark.parametrize("what", ["wheel", "metadata"])
def test_a_page_with_a_wrong_digest_is_caught(dist: Path, tmp_path: Path, accept: str, what: str) -> None:
    out = tmp_path / "site"
    build_index(dist, out)
    project = out / "cpu" / "simple" / "llama-cpp-python"
    target = project / (NAME if what == "wheel" else f"{NAME}.metadata")
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    page = project / ("index.html" if accept == ACCEPT_HTML_ONLY else "index.json")
    page.write_text(_other_digest(page.read_text(), digest))
    with served(out) as url, client(f"{url}/cpu/simple/", accept) as simple:
        [pkg] = simple.get_project_page("llama-cpp-python").packages
        with pytest.raises(DigestMismatchError):
            if what == "wheel":
                simple.download_package(pkg, tmp_path / "got" / NAME)
            else:
                simple.get_package_metadata(pkg)
    assert not (tmp_path / "got" / NAME).exists()
    with pytest.raises(LlamaWheelsError, match="does not"):  # our own check of the tree sees it too
        check_tree(out)


def test_a_failed_run_leaves_the_previous_index_intact(dist: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "site"
    build_index(dist, out)
    before = tree_digest(out)

    foreign = raw_wheel(dist / NAME.replace(VERSION, f"{VERSION}.post1"), package_files())  # no provenance
    with pytest.raises(UserError, match=r"no llama_wheels\.json record, so nothing says its variant family"):
        build_index(dist, out)
    assert tree_digest(out) == before
    foreign.unlink()
    twice = built_wheel(dist / "again", index="cpu", libs={"libother.so": b"other bytes"})
    with pytest.raises(UserError, match=r"already published in the cpu index with sha256 .* never changes"):
        build_index(dist, out)
    assert tree_digest(out) == before
    twice.unlink()

    def broken(root: Path) -> None:  # fails after the whole new tree was written
        raise OSError("disk full")

    monkeypatch.setattr(index_module, "check_tree", broken)
    (dist / "dotprod" / NAME).unlink()
    with pytest.raises(OSError, match="disk full"):
        build_index(dist, out)
    assert tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist", "site"], "temp directories left behind"


def test_a_rerun_keeps_every_published_file(dist: Path, tmp_path: Path) -> None:
    """Append-only: a wheel no longer in DIST stays in the index it was published in, byte for byte."""
    out = tmp_path / "site"
    build_index(dist, out)
    before = tree_digest(out)
    (dist / "dotprod" / NAME).unlink()
    build_index(dist, out)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["armv8.2-dotprod", "cpu"]
    assert tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist", "site"]


def test_refuses_to_replace_a_directory_it_did_not_write(dist: Path, tmp_path: Path) -> None:
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not an index written by llama-wheels"):
        build_index(dist, precious)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_cli_index_and_inspect(dist: Path, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return cli("--log", str(tmp_path / "log"), *args, timeout=120)

    result = run("index", str(dist), str(tmp_path / "site"))
    assert result.returncode == 0, result.stderr
    url = (tmp_path / "site/cpu/simple").as_uri()
    assert (f"cpu: 1 wheel(s) -> pip install llama-cpp-python --only-binary llama-cpp-python "
            f"--extra-index-url {url}") in result.stdout
    shown = run("inspect", str(dist / "default" / NAME))
    assert shown.returncode == 0, shown.stderr
    assert "target     linux-aarch64 (linux-aarch64, index cpu)" in shown.stdout
    assert "tags      py3-none-manylinux_2_17_aarch64, py3-none-manylinux2014_aarch64" in shown.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    failed = run("index", str(empty), str(tmp_path / "site"))
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1] == (
        f"llama-wheels: error: {empty}: holds no .whl files; build some first (llama-wheels build)")



def test_the_documentation_folder_beside_the_index_is_no_family(dist: Path, tmp_path: Path) -> None:
    """release.yml's index job writes site/docs/ after the index; the landing page links it, and an index
    written again over such a site neither takes docs/ for a family nor fails on it."""
    out = tmp_path / "site"
    build_index(dist, out)
    assert '<a href="docs/">documentation</a>' in (out / "index.html").read_text()
    (out / index_module.DOCS).mkdir()
    (out / index_module.DOCS / "index.html").write_text("<p>the guide</p>")
    check_tree(out)
    assert sorted(build_index(dist, out)) == ["armv8.2-dotprod", "cpu"]


def test_a_target_indexed_as_docs_is_refused(tmp_path: Path) -> None:
    """The sabotage: a target whose index is "docs" would put wheels where the documentation site goes."""
    built_wheel(tmp_path / "dist", index=index_module.DOCS, target="linux-aarch64")
    with pytest.raises(UserError, match=r"its target's index is 'docs', the site's documentation folder; give the "
                                        r"target another index in build_config/targets.toml"):
        build_index(tmp_path / "dist", tmp_path / "site")
    assert not (tmp_path / "site").exists()
