"""The static PEP 503/691 index: layout per variant family, validity, pip reading it, atomic replacement."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llama_wheels.core.errors import UserError
from llama_wheels.release import index as index_module
from llama_wheels.release.index import build_index, check_tree, parse_links

from .conftest import cli
from .wheelfactory import NAME, built_wheel, package_files, raw_wheel


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    """Wheels of two families: the same file name, so each target was built into its own directory."""
    d = tmp_path / "dist"
    built_wheel(d / "default", index="cpu", target="linux-aarch64")
    built_wheel(d / "dotprod", index="armv8.2-dotprod", target="linux-aarch64-armv8.2-dotprod")
    return d


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    # --isolated: no user/site pip configuration or PIP_* variables (e.g. a find-links dir) take part.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return subprocess.run([sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, env=env, timeout=300)


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
    assert data["versions"] == ["0.3.36"]
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
              "llama-cpp-python==0.3.36")
    assert got.returncode == 0, got.stdout + got.stderr
    assert [p.name for p in (tmp_path / "got").iterdir()] == [NAME]

    page = out / "cpu" / "simple" / "llama-cpp-python" / "index.html"
    page.write_text(page.read_text().replace("#sha256=", "#sha256=0"))  # a fragment that cannot match
    bad = pip("download", "--index-url", url, *target, "-d", str(tmp_path / "bad"),
              "llama-cpp-python==0.3.36")
    assert bad.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in bad.stdout + bad.stderr


def test_a_failed_run_leaves_the_previous_index_intact(dist: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "site"
    build_index(dist, out)
    before = tree_digest(out)

    foreign = raw_wheel(dist / NAME.replace("0.3.36", "0.3.37"), package_files())  # no provenance
    with pytest.raises(UserError, match=r"has no llama_wheels\.json provenance"):
        build_index(dist, out)
    assert tree_digest(out) == before
    foreign.unlink()
    twice = built_wheel(dist / "again", index="cpu")
    with pytest.raises(UserError, match="found twice for the cpu index"):
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


def test_a_rerun_replaces_the_index(dist: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    build_index(dist, out)
    (dist / "dotprod" / NAME).unlink()
    build_index(dist, out)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["cpu"]
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
    assert f"cpu: 1 wheel(s) -> pip install --index-url {url}" in result.stdout
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
