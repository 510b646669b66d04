"""The release rehearsed here: release.yml's job graph (read from the generated file) run by
``llama-wheels release rehearse`` against a directory standing in for the repository's releases and a
loopback HTTP server standing in for Pages, four tags in a row, each sabotaged run failing with one line.

    A  the default wheel and the legacy pin's wheel: built (the suite's own builds, cache hits), audited,
       run on an emulated CPU, uploaded, indexed, deployed, published; pip installs both by hash
    B  after a change to stages/: every record's code hash differs, so every rebuilt file has other bytes
       under its published name. B succeeds, keeps A's files (one line each), and the index still serves
       A's bytes: pip installs ==0.3.36 and the legacy pin with A's sha256
    C  a deliberate rebuild (build tag 2), a failure injected after the upload and before publishing; the
       same tag run again completes with nothing uploaded twice
    D  an asset of A altered on disk: the index job refuses, naming the file and both sha256

The wheel jobs' builds are stood in for by the wheels ``llama-wheels build`` made (GitHub builds with
cibuildwheel); B's and C's rebuilds are those wheels finalized again (the real finalize stage) with the
record a stages/ edit or a ``build = 2`` bump produces, not recompiled: the same bytes a rebuild would
differ by, minutes instead of a compile.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llama_wheels.binaries.record import require_record
from llama_wheels.core.cache import sha256_file
from llama_wheels.release.rehearsal import serve
from llama_wheels.stages import provenance
from llama_wheels.stages.finalize import finalize_wheel
from tests.support.checkout import build_target, cli, error_line, pinned

LEGACY_TARGET = "linux-aarch64-armv8.2-dotprod"  # the legacy pin's wheel the suite builds (test_legacy.py)
CPU = "neoverse-n1"  # the matrix job's CPU class here (GitHub's runs every class)


@pytest.fixture(scope="session")
def legacy_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_target(tmp_path_factory, LEGACY_TARGET, "--pin", "legacy", "--no-verify")


def refinalized(wheel: Path, dest: Path, change: dict[str, Any]) -> Path:
    """``wheel`` finalized again with its record updated by ``change`` ({section: {key: value}})."""
    record = require_record(wheel, "the build")
    for section, values in change.items():
        record = replace(record, **{section: replace(getattr(record, section), **values)})
    dest.mkdir(parents=True, exist_ok=True)
    return finalize_wheel(wheel, record, dest)


def edited_stage_code_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The stage code hash of stages/ with one file edited (what a record says after such a change)."""
    stages = tmp_path / "stages"
    shutil.copytree(provenance.STAGES_DIR, stages, ignore=shutil.ignore_patterns("__pycache__"))
    with (stages / "build.py").open("a") as f:
        f.write("# an edit to the stages\n")
    with monkeypatch.context() as m:
        m.setattr(provenance, "STAGES_DIR", stages)
        return provenance.stage_code_hash()


def rehearse(root: Path, tag: str, wheels: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("--log", str(root / f"{tag}.log"), "release", "rehearse", "--tag", tag, "--releases",
               str(root / "releases"), "--pages", str(root / "pages"), "--work", str(root / "work"),
               "--wheels", str(wheels), "--cpu", CPU, *extra, timeout=5400)


def pip_download(url: str, requirement: str, dest: Path) -> Path:
    """pip, as a user on an aarch64 Linux machine, with a hash-pinned requirement; the file it fetched."""
    requirements = dest / "requirements.txt"
    dest.mkdir(parents=True)
    requirements.write_text(requirement + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    got = subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", "download", "--no-cache-dir",
         "--index-url", url, "--platform", "manylinux2014_aarch64", "--python-version", "3.11", "--implementation",
         "cp", "--only-binary=:all:", "--no-deps", "--require-hashes", "-r", str(requirements), "-d",
         str(dest / "got")], capture_output=True, text=True, env=env, timeout=600)
    assert got.returncode == 0, got.stdout + got.stderr
    [wheel] = (dest / "got").iterdir()
    return wheel


def assets(root: Path, tag: str) -> list[str]:
    return sorted(p.name for p in (root / "releases" / tag / "assets").iterdir())


def test_four_tags_rehearsed(tmp_path: Path, default_wheel: Path, legacy_wheel: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "rehearsal"
    root.mkdir()
    current, legacy = pinned(), pinned("legacy")
    built = root / "built-a"
    built.mkdir()
    a_default, a_legacy = (Path(shutil.copy2(w, built / w.name)) for w in (default_wheel, legacy_wheel))
    a_sha = {"default": sha256_file(a_default), "legacy": sha256_file(a_legacy)}
    default_asset = f"linux-aarch64--{default_wheel.name}"
    legacy_asset = f"{LEGACY_TARGET}--{legacy_wheel.name}"

    # ------------------------------------------------------------------ tag A
    result = rehearse(root, "vA", built)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vA: every job of .github/workflows/release.yml done" in result.stdout
    assert assets(root, "vA") == sorted([default_asset, legacy_asset, "matrix.json", "matrix.txt"])
    assert json.loads((root / "releases/vA/release.json").read_text())["draft"] is False
    notes = json.loads((root / "releases/vA/release.json").read_text())["notes"]
    assert f"`{default_asset}` `{a_sha['default']}`" in notes and f"`{legacy_asset}` `{a_sha['legacy']}`" in notes
    matrix = json.loads((root / "releases/vA/assets/matrix.json").read_text())
    assert matrix["ok"] and {c["cpu"] for c in matrix["cells"]} == {CPU} and len(matrix["cells"]) == 2
    with serve(root / "pages") as url:
        got = pip_download(f"{url}/cpu/simple",
                           f"llama-cpp-python=={current.version} --hash=sha256:{a_sha['default']}", root / "pip-a")
    assert got.name == default_wheel.name
    # the documentation site deployed beside the index, linked from its landing page
    assert 'href="docs/"' in (root / "pages/index.html").read_text()
    assert "really works" in (root / "pages/docs/index.html").read_text()
    assert (root / "pages/docs/reference/cli/index.html").is_file()

    # ------------------------------------------------------------------ tag B, after a change to stages/
    code = edited_stage_code_hash(tmp_path, monkeypatch)
    assert code != require_record(default_wheel, "the build").llama_wheels.stage_code_sha256
    built_b = root / "built-b"
    for wheel in (default_wheel, legacy_wheel):  # two versions: two file names, one directory
        refinalized(wheel, built_b, {"llama_wheels": {"stage_code_sha256": code}})
    rebuilt = sorted(built_b.rglob("*.whl"))
    assert {sha256_file(w) for w in rebuilt}.isdisjoint(a_sha.values())  # every file's bytes differ
    result = rehearse(root, "vB", built_b)
    assert result.returncode == 0, result.stderr[-3000:]
    kept = [line for line in result.stderr.splitlines() + result.stdout.splitlines() if " kept " in f" {line}"]
    assert assets(root, "vB") == ["matrix.json", "matrix.txt"]  # nothing re-uploaded
    log = (root / "vB.log").read_text()
    for asset in (default_asset, legacy_asset):
        assert f"kept      {asset} as vA has it" in log, kept
        assert "record differs in llama_wheels.stage_code_sha256" in log
    with serve(root / "pages") as url:
        got_default = pip_download(f"{url}/cpu/simple",
                                   f"llama-cpp-python=={current.version} --hash=sha256:{a_sha['default']}",
                                   root / "pip-b-default")
        got_legacy = pip_download(f"{url}/armv8.2-dotprod/simple",
                                  f"llama-cpp-python=={legacy.version} --hash=sha256:{a_sha['legacy']}",
                                  root / "pip-b-legacy")
    assert sha256_file(got_default) == a_sha["default"] and sha256_file(got_legacy) == a_sha["legacy"]
    digests = json.loads((root / "pages/digests.json").read_text())
    assert digests["cpu"][default_wheel.name] == a_sha["default"]

    # ------------------------------------------------------------------ tag C: a failure after the upload
    built_c = root / "built-c"
    tagged = refinalized(default_wheel, built_c, {"pin": {"build_tag": "2"}})
    assert tagged.name == default_wheel.name.replace(f"{current.version}-py3", f"{current.version}-2-py3")
    result = rehearse(root, "vC", built_c, "--fail-after", "assets")
    assert result.returncode == 1
    assert error_line(result) == ("llama-wheels: error: vC: failure injected after job assets (--fail-after); "
                                 "run the same tag again to resume")
    assert json.loads((root / "releases/vC/release.json").read_text())["draft"] is True
    uploaded = assets(root, "vC")
    assert f"linux-aarch64--{tagged.name}" in uploaded
    result = rehearse(root, "vC", built_c)
    assert result.returncode == 0, result.stderr[-3000:]
    assert assets(root, "vC") == uploaded  # nothing duplicated, nothing new
    assert f"present   linux-aarch64--{tagged.name} in vC with the same bytes" in (root / "vC.log").read_text()
    assert json.loads((root / "releases/vC/release.json").read_text())["draft"] is False
    served = sorted(p.relative_to(root / "pages").as_posix() for p in (root / "pages").glob("*/simple/*/*.whl"))
    assert served == sorted([f"cpu/simple/llama-cpp-python/{default_wheel.name}",
                             f"cpu/simple/llama-cpp-python/{tagged.name}",
                             f"armv8.2-dotprod/simple/llama-cpp-python/{legacy_wheel.name}"])

    # ------------------------------------------------------------------ tag D: a published asset altered
    published = root / "releases/vA/assets" / default_asset
    published.write_bytes(published.read_bytes() + b"\0")
    altered = hashlib.sha256(published.read_bytes()).hexdigest()
    before = sorted((root / "pages").rglob("*"))
    result = rehearse(root, "vD", built)
    assert result.returncode == 2, result.stderr[-3000:]
    assert error_line(result) == (
        f"llama-wheels: error: vD: job index failed: {default_wheel.name}: release asset vA/{default_asset} has "
        f"sha256 {altered}, but the index published sha256 {a_sha['default']} (cpu index); a published file never "
        "changes: restore the asset from the published index, then run again")
    assert sorted((root / "pages").rglob("*")) == before  # nothing deployed
    assert json.loads((root / "releases/vD/release.json").read_text())["draft"] is True  # nothing published
