"""Provenance record, SOURCE_DATE_EPOCH, the finalize stage's normalized archive, and the wheel cache."""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import json
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from llama_wheels import pipeline
from llama_wheels.binaries.record import FILENAME, Record, read_record
from llama_wheels.config import load
from llama_wheels.config.platforms import platform
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import UserError
from llama_wheels.pipeline.store import WheelStore
from llama_wheels.plan import BuildJob, plan
from llama_wheels.stages import provenance
from llama_wheels.stages.fetch import cached_sdist
from llama_wheels.stages.finalize import finalize_wheel, read_files
from llama_wheels.stages.patching import AppliedPatch, PreparedSource, patch_files
from llama_wheels.stages.provenance import collect, source_date_epoch
from llama_wheels.stages.toolchain import Toolchain, zig_toolchain
from tests.support.checkout import REPO, pinned
from tests.support.wheelfactory import DIST_INFO, EPOCH, NAME, package_files, raw_wheel, record

SDIST_TIME = 1667997441  # what scikit-build-core stamps on every sdist member


def fake_sdist(path: Path, version: str = pinned().version, mtime: int = SDIST_TIME) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, data in ((f"llama_cpp_python-{version}/PKG-INFO", b"Name: llama_cpp_python\n"),
                           (f"llama_cpp_python-{version}/CMakeLists.txt", b"")):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime
            archive.addfile(info, io.BytesIO(data))
    return path


def fake_source(tree: Path, job: BuildJob, patches: tuple[AppliedPatch, ...] | None = None) -> PreparedSource:
    tree.mkdir(parents=True, exist_ok=True)
    applied = patches if patches is not None else tuple(
        AppliedPatch(name=p.name, sha256=hashlib.sha256(p.read_bytes()).hexdigest())
        for p in patch_files(job.pin, REPO / "patches"))
    values: dict[str, Any] = {"tree": tree, "key": "k" * 16, "pin": job.pin.name, "version": job.pin.version,
                              "sdist_sha256": job.pin.sdist_sha256, "patches": applied,
                              "llama_cpp_commit": job.pin.llama_cpp_commit, "cmake_options": frozenset()}
    return PreparedSource(**{f.name: values[f.name] for f in fields(PreparedSource)})


def job_for(target: str = "linux-aarch64-armv8.0") -> BuildJob:
    [job] = plan(load(REPO), [target])
    return job


def setup_root(root: Path, job: BuildJob) -> tuple[Cache, PreparedSource, Toolchain, Path]:
    cache = Cache(root)
    source = fake_source(root / "src" / job.pin.name, job)
    toolchain = zig_toolchain(platform(job.platform), cache)
    sdist = fake_sdist(cached_sdist(job.pin, cache))
    return cache, source, toolchain, sdist


def collect_in(root: Path, job: BuildJob) -> Record:
    cache, source, toolchain, sdist = setup_root(root, job)
    return collect(job, source, toolchain, cache, sdist=sdist, patches=patch_files(job.pin, REPO / "patches"))


@pytest.fixture(autouse=True)
def _no_epoch_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)


def test_record_holds_every_input_and_no_machine_path(tmp_path: Path) -> None:
    job = job_for()
    data = collect_in(tmp_path / "cache", job).to_data()
    text = json.dumps(data)
    assert str(tmp_path) not in text, "a path of this machine leaked into the provenance record"
    pin = pinned()  # the default pin, as build_config/pins.toml has it
    assert data["pin"] == {"name": pin.name, "llama_cpp_python": pin.version, "llama_cpp_commit": pin.llama_cpp_commit,
                           "sdist": {"filename": f"llama_cpp_python-{pin.version}.tar.gz",
                                     "sha256": pin.sdist_sha256}}
    assert [p["name"] for p in data["patches"]] == list(job.pin.patches)
    assert all(len(p["sha256"]) == 64 for p in data["patches"])
    assert data["target"]["name"] == "linux-aarch64-armv8.0" and data["target"]["index"] == "armv8.0"
    settings = data["cmake"]["config_settings"]
    assert settings[0] == "build-dir=<build>"
    assert "cmake.define.GGML_CPU_ARM_ARCH=armv8-a" in settings
    assert "cmake.define.CMAKE_TOOLCHAIN_FILE=<toolchain>/toolchain.cmake" in settings
    assert any("-ffile-prefix-map=<source>=/src/llama-cpp-python" in s for s in settings)
    versions = data["toolchain"]["versions"]
    assert set(versions) >= {"zig", "compiler", "cmake", "ninja", "scikit-build-core", "auditwheel",
                             "patchelf"}
    assert versions["compiler"].startswith("clang version")
    assert len(data["llama_wheels"]["stage_code_sha256"]) == 64
    # No SOURCE_DATE_EPOCH in the environment: the newest of the sdist and the patches' Date: headers.
    assert data["build"]["source_date_epoch"] > SDIST_TIME
    assert data["build"]["source_date_epoch_from"].startswith("Date: of 000")


def test_the_record_holds_the_settings_the_build_stage_passes(tmp_path: Path) -> None:
    """Every scikit-build-core setting, in order, this machine's paths as placeholders: spelled out here,
    since the strings are part of the cache key (a change of spelling rebuilds every wheel)."""
    job = job_for()
    cache, source, toolchain, sdist = setup_root(tmp_path / "cache", job)
    data = collect(job, source, toolchain, cache, sdist=sdist, patches=patch_files(job.pin, REPO / "patches")).to_data()
    flags = " ".join([*job.compiler_flags, "-ffile-prefix-map=<source>=/src/llama-cpp-python",
                      f"-ffile-prefix-map=../../src/{job.pin.name}=/src/llama-cpp-python",
                      "-ffile-prefix-map=<build>=/build"])
    launcher = [f"cmake.define.CMAKE_{lang}_COMPILER_LAUNCHER=ccache" for lang in ("C", "CXX")]
    assert data["cmake"]["config_settings"] == [
        "build-dir=<build>",
        *(f"cmake.define.{name}={value}" for name, value in job.defines),
        "cmake.define.CMAKE_TOOLCHAIN_FILE=<toolchain>/toolchain.cmake",
        f"cmake.define.CMAKE_C_FLAGS={flags}",
        f"cmake.define.CMAKE_CXX_FLAGS={flags}",
        "cmake.define.CMAKE_SHARED_LINKER_FLAGS=-Wl,--strip-debug",
        "cmake.define.CMAKE_MODULE_LINKER_FLAGS=-Wl,--strip-debug",
        *(launcher if toolchain.launcher else []),
    ]


def test_two_cache_roots_give_the_same_record(tmp_path: Path) -> None:
    """The basis of reproducibility across directories: nothing in the record depends on where."""
    job = job_for()
    a, b = collect_in(tmp_path / "a" / "cache", job), collect_in(tmp_path / "elsewhere" / "b", job)
    assert a.to_json() == b.to_json()
    assert a.key == b.key


def test_every_input_changes_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = job_for()
    cache, source, toolchain, sdist = setup_root(tmp_path / "cache", job)
    patches = patch_files(job.pin, REPO / "patches")

    def key(job: BuildJob = job, source: PreparedSource = source) -> str:
        return collect(job, source, toolchain, cache, sdist=sdist, patches=patches).key

    keys = {"base": key()}
    keys["target"] = key(job=job_for("linux-aarch64-armv8.2-dotprod"))
    edited = (AppliedPatch(name=source.patches[0].name, sha256="0" * 64), *source.patches[1:])
    keys["patch"] = key(source=fake_source(source.tree, job, edited))
    with monkeypatch.context() as m:
        real = provenance.tool_versions
        m.setattr(provenance, "tool_versions", lambda tc: {**real(tc), "cmake": "9.9.9"})
        keys["tool"] = key()
    with monkeypatch.context() as m:
        m.setattr(provenance, "stage_code_hash", lambda: "f" * 64)
        keys["stage code"] = key()
    with monkeypatch.context() as m:
        m.setenv("SOURCE_DATE_EPOCH", "1700000000")
        keys["SOURCE_DATE_EPOCH"] = key()
    assert len(set(keys.values())) == len(keys), keys
    assert key() == keys["base"]


def test_source_date_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = pinned().sdist_filename
    sdist = fake_sdist(tmp_path / "s" / name)
    old = tmp_path / "0001-old.patch"
    old.write_text("From 0 Mon Sep 17 00:00:00 2001\nDate: Thu, 1 Jan 2015 00:00:00 +0000\n")
    new = tmp_path / "0002-new.patch"
    new.write_text("From 0 Mon Sep 17 00:00:00 2001\nDate: Wed, 25 Nov 2026 06:06:20 +0000\n")
    assert source_date_epoch(sdist, []) == (SDIST_TIME, f"{name} PKG-INFO mtime")
    assert source_date_epoch(sdist, [old]) == (SDIST_TIME, f"{name} PKG-INFO mtime")
    assert source_date_epoch(sdist, [old, new]) == (1795586780, "Date: of 0002-new.patch")
    assert (sdist.parent / (sdist.name + ".epoch")).read_text() == f"{SDIST_TIME}\n"  # memo, no tar re-read
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1600000000")
    assert source_date_epoch(sdist, [new]) == (1600000000, "environment")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(UserError, match="SOURCE_DATE_EPOCH='yesterday' is not a Unix time"):
        source_date_epoch(sdist, [])


def record_rows(wheel: Path) -> list[list[str]]:
    with zipfile.ZipFile(wheel) as archive:
        return list(csv.reader(io.StringIO(archive.read(f"{DIST_INFO}/RECORD").decode())))


def test_finalize_normalizes_whatever_the_build_tools_wrote(tmp_path: Path) -> None:
    files = package_files({"libllama.so": b"\x7fELF fake", "libggml.so": b"\x7fELF other"})
    a = raw_wheel(tmp_path / "a" / NAME, files, date_time=(2024, 1, 2, 3, 4, 5), umask=0o022)
    b = raw_wheel(tmp_path / "b" / NAME, files, reverse=True, date_time=(2030, 6, 7, 8, 9, 10), umask=0o077,
                  directories=True)
    (tmp_path / "out-a").mkdir()
    (tmp_path / "out-b").mkdir()
    fa = finalize_wheel(a, record(), tmp_path / "out-a")
    fb = finalize_wheel(b, record(), tmp_path / "out-b")
    assert fa.read_bytes() == fb.read_bytes(), "order, timestamps, modes or directory entries leaked through"
    again = finalize_wheel(fa, record(), tmp_path)  # idempotent: the provenance file is replaced, not doubled
    assert again.read_bytes() == fa.read_bytes()

    with zipfile.ZipFile(fa) as archive:
        infos = archive.infolist()
        names = [i.filename for i in infos]
        assert names == ["llama_cpp/__init__.py", "llama_cpp/lib/libggml.so", "llama_cpp/lib/libllama.so",
                         "llama_cpp/llama.py", f"{DIST_INFO}/METADATA", f"{DIST_INFO}/WHEEL",
                         f"{DIST_INFO}/{FILENAME}", f"{DIST_INFO}/RECORD"]
        assert {i.date_time for i in infos} == {(2025, 11, 24, 16, 0, 0)}  # EPOCH, in UTC
        modes = {i.filename: (i.external_attr >> 16) & 0o7777 for i in infos}
        assert modes["llama_cpp/lib/libllama.so"] == 0o755 and modes["llama_cpp/llama.py"] == 0o644
        assert all(i.create_system == 3 and not i.extra for i in infos)
        assert json.loads(archive.read(f"{DIST_INFO}/{FILENAME}")) == json.loads(record().to_json())
        rows = record_rows(fa)
        assert [r[0] for r in rows] == names
        assert rows[-1] == [f"{DIST_INFO}/RECORD", "", ""]
        for name, digest, size in rows[:-1]:
            data = archive.read(name)
            b64 = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={b64}"
            assert int(size) == len(data)
    assert read_record(fa) == record()


def test_finalize_date_follows_source_date_epoch(tmp_path: Path) -> None:
    wheel = raw_wheel(tmp_path / NAME, package_files())
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    x = finalize_wheel(wheel, record(epoch=EPOCH), tmp_path / "x")
    y = finalize_wheel(wheel, record(epoch=EPOCH + 3600), tmp_path / "y")
    assert x.read_bytes() != y.read_bytes()
    with zipfile.ZipFile(y) as archive:
        assert {i.date_time for i in archive.infolist()} == {(2025, 11, 24, 17, 0, 0)}
    files, _ = read_files(y)
    assert json.loads(files[f"{DIST_INFO}/{FILENAME}"][0])["build"]["source_date_epoch"] == EPOCH + 3600


def test_read_record_of_a_foreign_wheel_is_none(tmp_path: Path) -> None:
    assert read_record(raw_wheel(tmp_path / NAME, package_files())) is None


def test_unchanged_inputs_hit_the_cache_and_any_change_rebuilds(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    job = job_for()
    cache, source, toolchain, _ = setup_root(tmp_path / "cache", job)
    builds: list[int | None] = []

    @contextlib.contextmanager
    def fake_build(job: BuildJob, source: PreparedSource, toolchain: Toolchain, cache: Cache, *,
                   source_date_epoch: int | None = None) -> Iterator[Path]:
        builds.append(source_date_epoch)
        out = tmp_path / f"built-{len(builds)}"
        out.mkdir()
        yield raw_wheel(out / NAME, package_files({"libllama.so": b"\x7fELF"}))

    @contextlib.contextmanager
    def fake_repair(wheel: Path, target_platform: object) -> Iterator[Path]:
        yield wheel

    monkeypatch.setattr(pipeline, "build_wheel", fake_build)
    monkeypatch.setattr(pipeline, "repair_wheel", fake_repair)
    monkeypatch.setattr(pipeline, "check_wheel", lambda wheel, target_platform: None)
    config = load(REPO)

    def run() -> tuple[bool, str]:
        entry, _, hit = pipeline.finished_wheel(job, source, toolchain, platform(job.platform), config, cache)
        assert read_record(entry.wheel) is not None
        return hit, entry.sha256

    first_hit, first_sha = run()
    second_hit, second_sha = run()
    assert (first_hit, second_hit) == (False, True)
    assert second_sha == first_sha and len(builds) == 1
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    third_hit, third_sha = run()
    assert not third_hit and len(builds) == 2 and builds[-1] == 1700000000
    assert third_sha != first_sha


def test_a_corrupted_cache_entry_is_dropped_not_served(tmp_path: Path) -> None:
    store = WheelStore(Cache(tmp_path))
    wheel = raw_wheel(tmp_path / NAME, package_files())
    entry = store.put("ab" * 32, wheel)
    assert store.lookup("ab" * 32) == entry
    entry.wheel.write_bytes(b"truncated")
    assert store.lookup("ab" * 32) is None
    assert not entry.directory.exists()

