"""The release commands against a directory standing in for the repository's releases: what a tag builds,
which assets it uploads (a re-run uploads nothing twice, a rebuild that differs keeps the published file),
the index from every release verified against the previous index, the notes, the draft published last.

The wheels are small real wheels with provenance records (tests/support/wheelfactory.py), finalized by the real
finalize stage where a rebuild must differ the way a change to stages/ makes it differ.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from llama_wheels.binaries.record import require_record
from llama_wheels.ci.workflows import RELEASE
from llama_wheels.config import load
from llama_wheels.core.cache import sha256_file
from llama_wheels.core.errors import LlamaWheelsError, UserError
from llama_wheels.release import doctor, publishing
from llama_wheels.release.index import DIGESTS
from llama_wheels.release.rehearsal import job_order, read_workflow
from llama_wheels.release.store import DirectoryReleases
from llama_wheels.stages.finalize import finalize_wheel
from tests.support.checkout import REPO, cli, error_line, pinned
from tests.support.wheelfactory import NAME, built_wheel

ASSET = f"linux-aarch64--{NAME}"


def rebuilt(wheel: Path, dest: Path) -> Path:
    """``wheel`` as a build after a change to stages/ makes it: the same file name, another code hash in
    its record, so other bytes."""
    record = require_record(wheel, "the build")
    edited = replace(record, llama_wheels=replace(record.llama_wheels, stage_code_sha256="cd" * 32))
    dest.mkdir(parents=True, exist_ok=True)
    return finalize_wheel(wheel, edited, dest)


def release(store: DirectoryReleases, tag: str, dist: Path) -> list[str]:
    publishing.draft(store, tag)
    return publishing.place_assets(store, tag, dist)


@pytest.fixture
def store(tmp_path: Path) -> DirectoryReleases:
    return DirectoryReleases(tmp_path / "releases")


# ----------------------------------------------------------------------------- plan


def test_plan_builds_what_is_not_published_and_a_build_bump_makes_it_new(store: DirectoryReleases,
                                                                         config_root: Path, tmp_path: Path) -> None:
    config = load(REPO)
    planned = publishing.release_plan(config, store.releases())
    assert planned and all(p.published is None for p in planned)
    release(store, "v1", built_wheel(tmp_path / "dist" / "a").parent)
    [default] = [p for p in publishing.release_plan(config, store.releases())
                 if p.job.name == f"linux-aarch64@{pinned().name}"]
    assert default.published == f"v1: {ASSET}"
    assert sum(p.published is not None for p in publishing.release_plan(config, store.releases())) == 1
    pins = config_root / "build_config/pins.toml"
    pins.write_text(pins.read_text().replace(f"[pins.{pinned().name}]\n", f"[pins.{pinned().name}]\nbuild = 2\n"))
    assert all(p.published is None for p in publishing.release_plan(load(config_root), store.releases()))


# ----------------------------------------------------------------------------- assets


def test_a_rerun_uploads_nothing_twice(store: DirectoryReleases, tmp_path: Path) -> None:
    dist = built_wheel(tmp_path / "dist" / "wheel-current--linux-aarch64").parent.parent
    first = release(store, "v1", dist)
    assert first == [f"uploaded  {ASSET} sha256 {sha256_file(dist / 'wheel-current--linux-aarch64' / NAME)}"]
    again = release(store, "v1", dist)
    assert again == [f"present   {ASSET} in v1 with the same bytes"]
    assert list(store.releases()[0].assets) == [ASSET]
    assert publishing.draft(store, "v1").startswith("v1: draft release exists already")


def test_a_rebuild_that_differs_keeps_the_published_file_and_says_why(store: DirectoryReleases,
                                                                      tmp_path: Path) -> None:
    published = built_wheel(tmp_path / "a")
    release(store, "v1", published.parent)
    store.publish("v1", "notes")
    digest = sha256_file(store.root / "v1/assets" / ASSET)
    changed = rebuilt(published, tmp_path / "b")
    assert changed.name == published.name and sha256_file(changed) != digest
    [line] = release(store, "v2", changed.parent)
    assert line.startswith(f"kept      {ASSET} as v1 has it (sha256 {digest}); this build's sha256 "
                           f"{sha256_file(changed)} differs (record differs in llama_wheels.stage_code_sha256)")
    assert "build = N" in line
    assert store.releases()[1].assets == {}  # nothing uploaded to v2
    assert sha256_file(store.root / "v1/assets" / ASSET) == digest


def test_assets_need_the_draft_and_a_published_release_never_changes(store: DirectoryReleases,
                                                                     tmp_path: Path) -> None:
    dist = built_wheel(tmp_path / "a").parent
    with pytest.raises(UserError, match=r"v1: no draft release .* \(llama-wheels release draft v1\)"):
        publishing.place_assets(store, "v1", dist)
    publishing.draft(store, "v1")
    with pytest.raises(UserError, match="v2: no such release"):
        publishing.publish(store, "v2", "notes")
    publishing.place_assets(store, "v1", dist)
    assert publishing.publish(store, "v1", "notes") == "v1: published with 1 asset(s)"
    assert publishing.publish(store, "v1", "notes") == "v1: already published"
    other = built_wheel(tmp_path / "b", target="linux-aarch64-armv8.0", index="armv8.0").parent
    with pytest.raises(UserError, match=r"v1: already published, and linux-aarch64-armv8.0--.* is not in it"):
        publishing.place_assets(store, "v1", other)


# ----------------------------------------------------------------------------- index


def test_the_index_serves_every_release_and_verifies_the_previous_one(store: DirectoryReleases,
                                                                      tmp_path: Path) -> None:
    first = built_wheel(tmp_path / "a")
    release(store, "v1", first.parent)
    site = tmp_path / "site"
    publishing.release_index(store, "v1", None, site)  # the first release: no previous index
    store.publish("v1", "notes")
    served = json.loads((site / DIGESTS).read_text())
    assert served == {"cpu": {NAME: sha256_file(first)}}
    second = built_wheel(tmp_path / "b", target="linux-aarch64-armv8.0", index="armv8.0")
    release(store, "v2", rebuilt(first, tmp_path / "c").parent)  # kept: v1's
    release(store, "v2", second.parent)
    publishing.release_index(store, "v2", str(site), site)
    assert json.loads((site / DIGESTS).read_text()) == {"cpu": {NAME: sha256_file(first)},
                                                        "armv8.0": {NAME: sha256_file(second)}}
    assert sha256_file(site / "cpu/simple/llama-cpp-python" / NAME) == sha256_file(first)


@pytest.mark.parametrize("how", ["appended", "truncated"])
def test_a_tampered_asset_is_refused_naming_the_file_and_both_sha256(store: DirectoryReleases, tmp_path: Path,
                                                                    how: str) -> None:
    """Appended bytes leave a readable zip, truncated ones do not: both are refused as tampered."""
    release(store, "v1", built_wheel(tmp_path / "a").parent)
    site = tmp_path / "site"
    publishing.release_index(store, "v1", None, site)
    store.publish("v1", "notes")
    asset = store.root / "v1/assets" / ASSET
    published = sha256_file(asset)
    data = asset.read_bytes()
    asset.write_bytes(data + b"tampered" if how == "appended" else data[:-100])
    result = cli("--log", str(tmp_path / "log"), "release", "index", str(tmp_path / "next"), "--releases",
                 str(store.root), "--previous", str(site), "--tag", "v2", timeout=120)
    assert result.returncode == 2, result.stderr
    assert error_line(result) == (
        f"llama-wheels: error: {NAME}: release asset v1/{ASSET} has sha256 {sha256_file(asset)}, but "
        f"the index published sha256 {published} (cpu index); a published file never changes: "
        "restore the asset from the published index, then run again")
    assert not (tmp_path / "next").exists()


def test_a_withdrawn_asset_or_a_missing_previous_index_is_refused(store: DirectoryReleases,
                                                                 tmp_path: Path) -> None:
    release(store, "v1", built_wheel(tmp_path / "a").parent)
    site = tmp_path / "site"
    publishing.release_index(store, "v1", None, site)
    store.publish("v1", "notes")
    with pytest.raises(UserError, match=r"no digests.json there, but v1 published wheels"):
        publishing.release_index(store, "v2", str(tmp_path / "nowhere"), tmp_path / "next")
    (store.root / "v1/assets" / ASSET).unlink()
    release(store, "v2", built_wheel(tmp_path / "b", target="linux-aarch64-armv8.0", index="armv8.0").parent)
    with pytest.raises(UserError, match=f"{NAME}: the cpu index published it .* no release asset has it"):
        publishing.release_index(store, "v2", str(site), tmp_path / "next")


def test_notes_list_pins_targets_matrix_and_every_assets_sha256(store: DirectoryReleases, tmp_path: Path) -> None:
    wheel = built_wheel(tmp_path / "a")
    release(store, "v1", wheel.parent)
    matrix = tmp_path / "matrix.json"
    matrix.write_text(json.dumps({"ok": True, "cells": [{"cpu": "cortex-a53", "verdict": "pass"},
                                                        {"cpu": "neoverse-n1", "verdict": "pass"}]}))
    notes = publishing.release_notes(load(REPO), store, "v1", matrix)
    assert f"- `{pinned().name}`: llama-cpp-python {pinned().version}" in notes
    assert f"- `linux-aarch64@{pinned().name}`" in notes
    assert "2/2 cells ok on 2 CPU class(es): cortex-a53, neoverse-n1" in notes
    assert f"- `{ASSET}` `{sha256_file(wheel)}`" in notes


# ----------------------------------------------------------------------------- doctor, the job graph


def test_doctor_names_each_missing_setting() -> None:
    assert not doctor.judge_pages(None).ok
    assert not doctor.judge_pages({"build_type": "legacy"}).ok
    assert doctor.judge_pages({"build_type": "workflow", "html_url": "https://o.github.io/r/"}).ok
    custom = {"deployment_branch_policy": {"protected_branches": False, "custom_branch_policies": True}}
    assert not doctor.judge_environment(custom, [{"name": "main", "type": "branch"}]).ok  # GitHub's default
    assert doctor.judge_environment(custom, [{"name": "main", "type": "branch"}, {"name": "v*", "type": "tag"}]).ok
    assert not doctor.judge_environment(custom, [{"name": "v*", "type": "branch"}]).ok  # a branch rule, not a tag
    protected = {"deployment_branch_policy": {"protected_branches": True, "custom_branch_policies": False}}
    assert not doctor.judge_environment(protected, []).ok
    assert doctor.judge_environment({"deployment_branch_policy": None}, []).ok
    assert not doctor.judge_runners({"private": True}).ok and doctor.judge_runners({"private": False}).ok
    listing = doctor.checklist()
    assert "GitHub Actions" in listing and 'Tag "v1.2.3" is not allowed to deploy to github-pages' in listing
    assert "ubuntu-24.04-arm" in listing


def test_the_rehearsal_reads_the_job_order_from_release_yml() -> None:
    jobs = read_workflow(REPO / RELEASE)["jobs"]
    order = job_order(jobs)
    assert order.index("draft") < order.index("assets") < order.index("index") < order.index("pages") \
        < order.index("publish") == len(order) - 1
    assert order.index("wheel") < order.index("matrix") < order.index("draft")
    with pytest.raises(UserError, match="cycle"):
        job_order({"a": {"needs": "b"}, "b": {"needs": "a"}})


def test_the_rehearsal_refuses_what_it_cannot_stand_in_for(tmp_path: Path) -> None:
    """An expression or an action release.yml gains that the rehearsal does not know stops it, by name:
    the rehearsal never silently skips a part of the workflow."""
    from llama_wheels.release.rehearsal import Rehearsal

    rehearsal = Rehearsal(load(REPO), workflow=RELEASE, tag="v1", releases=tmp_path / "r", pages=tmp_path / "p",
                          work=tmp_path / "w", wheels=tmp_path, cpus=[], url="http://127.0.0.1:1/p")
    assert rehearsal.expand("${{ matrix.target }}@${{ github.ref_name }}", {"target": "t"}) == "t@v1"
    with pytest.raises(UserError, match=r"cannot evaluate \$\{\{ secrets.TOKEN \}\}"):
        rehearsal.expand("${{ secrets.TOKEN }}", {})
    with pytest.raises(UserError, match="uses actions/cache@v9, which the rehearsal does not know"):
        rehearsal.run_steps("job", {"steps": [{"uses": "actions/cache@v9"}]}, {})


def test_a_directory_store_answers_already_exists_like_github(store: DirectoryReleases, tmp_path: Path) -> None:
    store.create_draft("v1")
    report = tmp_path / "matrix.json"
    report.write_text("{}")
    store.upload("v1", report)
    with pytest.raises(LlamaWheelsError, match=r"v1: asset matrix\.json already exists"):
        store.upload("v1", report)
    report.write_text('{"ok": true}')
    store.upload("v1", report, replace=True)  # a draft's own report, replaced on a re-run
    assert store.releases()[0].assets == {"matrix.json": sha256_file(report)}


def test_the_release_commands_from_the_command_line(store: DirectoryReleases, tmp_path: Path) -> None:
    """The parser wiring, as a user types it: plan against a directory store, doctor's list, a missing store."""
    planned = cli("release", "plan", "--releases", str(store.root))
    assert planned.returncode == 0, planned.stderr
    assert f"build     linux-aarch64@{pinned().name} (llama-cpp-python {pinned().version})" in planned.stdout
    assert "of" in planned.stdout.splitlines()[-1] and "new in this tag" in planned.stdout.splitlines()[-1]
    listing = cli("release", "doctor")
    assert listing.returncode == 0 and "github-pages environment, deployment tags" in listing.stdout
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_WHEELS_RELEASES"}
    missing = cli("--log", str(tmp_path / "log"), "release", "draft", "--tag", "v1", env=env)
    assert missing.returncode == 2
    assert error_line(missing) == (
        "llama-wheels: error: no release store: pass --releases DIR (a directory standing in for the repository's "
        "releases) or --releases github, or set LLAMA_WHEELS_RELEASES")


def test_a_broken_release_yml_stops_the_rehearsal_in_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "release.yml"
    broken.write_text("jobs:\n  a:\n    run: echo 'x': y\n")
    with pytest.raises(UserError, match=r"release.yml:3: not valid YAML .*run `llama-wheels ci generate`"):
        read_workflow(broken)
    broken.write_text("name: release\n")
    with pytest.raises(UserError, match="not a workflow"):
        read_workflow(broken)


def test_an_abandoned_draft_is_not_indexed_and_a_deployed_one_must_be_published(store: DirectoryReleases,
                                                                                tmp_path: Path) -> None:
    """A draft of another tag is not public: its wheels stay out of the index. If its release had already
    deployed Pages, the next tag says to publish it first instead of calling its file withdrawn."""
    release(store, "v1", built_wheel(tmp_path / "a").parent)
    site = tmp_path / "site"
    publishing.release_index(store, "v1", None, site)  # v1 deployed Pages, then failed before publishing
    release(store, "v2", built_wheel(tmp_path / "b", target="linux-aarch64-armv8.0", index="armv8.0").parent)
    with pytest.raises(UserError, match=f"{NAME}: the cpu index serves it since the release of v1 deployed Pages, "
                                        "but v1 is still a draft; run v1's release again"):
        publishing.release_index(store, "v2", str(site), tmp_path / "next")
    families = publishing.release_index(store, "v2", None, tmp_path / "fresh")  # no index deployed yet
    assert list(families) == ["armv8.0"]  # v1's draft is not served
