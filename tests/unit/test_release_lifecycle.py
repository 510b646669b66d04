"""Several versions published side by side, an append-only index, PEP 427 build tags.

The wheels here are small real wheels finished by the real finalize stage (the build tag comes from the
provenance record, as in a build), indexed by the real ``index`` command and installed by real pip from
a file URL or a loopback HTTP server.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from llama_wheels.binaries.record import Record
from llama_wheels.binaries.wheel import parse_wheel_name, with_build_tag
from llama_wheels.config import load
from llama_wheels.core.errors import ConfigError, UserError
from llama_wheels.plan import published_jobs
from llama_wheels.release.index import build_index
from llama_wheels.stages.finalize import finalize_wheel, write_wheel
from tests.support.checkout import REPO, cli
from tests.support.index import served, tree_digest
from tests.support.wheelfactory import EPOCH, record

PLATFORM = "manylinux_2_17_aarch64.manylinux2014_aarch64"


def released_wheel(directory: Path, version: str, *, build_tag: str | None = None, index: str = "cpu",
                   payload: bytes = b"code") -> Path:
    """A wheel of llama-cpp-python ``version`` as the pipeline finishes one: raw build output, then the
    finalize stage with a provenance record whose pin carries ``build_tag``."""
    dist_info = f"llama_cpp_python-{version}.dist-info"
    files = {
        "llama_cpp/__init__.py": (f"__version__ = '{version}'\n".encode(), False),
        "llama_cpp/lib/libllama.so": (payload, True),
        f"{dist_info}/METADATA": (f"Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: {version}\n"
                                  "Requires-Python: >=3.8\n\n".encode(), False),
        f"{dist_info}/WHEEL": (b"Wheel-Version: 1.0\nGenerator: scikit-build-core 1.1.2\nRoot-Is-Purelib: false\n"
                               b"Tag: py3-none-manylinux_2_17_aarch64\nTag: py3-none-manylinux2014_aarch64\n\n",
                               False),
    }
    raw = directory / "raw" / f"llama_cpp_python-{version}-py3-none-{PLATFORM}.whl"
    raw.parent.mkdir(parents=True)
    write_wheel(raw, files, dist_info, EPOCH)
    data: dict[str, Any] = json.loads(record(index=index).to_json())
    data["pin"]["llama_cpp_python"] = version
    if build_tag is not None:
        data["pin"]["build_tag"] = build_tag
    directory.mkdir(parents=True, exist_ok=True)
    final = finalize_wheel(raw, Record.from_data(data, where=raw.name), directory)
    raw.unlink()
    raw.parent.rmdir()
    return final


def pip_download(index_url: str, requirement: str, dest: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", "download", "--no-cache-dir",
         "--index-url", index_url, "--platform", "manylinux2014_aarch64", "--python-version", "3.11",
         "--implementation", "cp", "--only-binary=:all:", "--no-deps", "-d", str(dest), requirement],
        capture_output=True, text=True, env=env, timeout=300)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_published_pin_is_built_with_the_targets_it_can_build() -> None:
    config = load(REPO)
    jobs = published_jobs(config)
    by_pin: dict[str, list[str]] = {}
    for job in jobs:
        by_pin.setdefault(job.pin.name, []).append(job.target.name)
    assert set(by_pin) == {name for name, pin in config.pins.items() if pin.publish}
    assert by_pin["current"] == sorted(n for n, t in config.targets.items() if t.publish)
    # 0.3.4 has no CPU variant dispatch and no Apple switches: its fixed-ISA Linux targets only.
    assert by_pin["legacy"] == ["linux-aarch64-armv8.0", "linux-aarch64-armv8.2-dotprod"]
    assert "legacy-unpatched" not in by_pin


def test_a_pin_is_published_only_when_it_says_so(config_root: Path) -> None:
    pins = config_root / "build_config/pins.toml"
    text = pins.read_text()
    pins.write_text(text.replace("publish = true  # its fixed-ISA", "publish = false  # its fixed-ISA"))
    assert {job.pin.name for job in published_jobs(load(config_root))} == {"current"}
    pins.write_text(text.replace("publish = true", "publish = false"))
    with pytest.raises(ConfigError, match="no pin has publish = true"):
        published_jobs(load(config_root))
    # 0.3.4 builds only the fixed-ISA Linux targets: with those unpublished, publishing it is an error
    pins.write_text(text)
    targets = config_root / "build_config/targets.toml"
    targets.write_text(targets.read_text().replace('[targets."linux-aarch64-armv8.0"]\n',
                                                   '[targets."linux-aarch64-armv8.0"]\npublish = false\n')
                       .replace('[targets."linux-aarch64-armv8.2-dotprod"]\n',
                                '[targets."linux-aarch64-armv8.2-dotprod"]\npublish = false\n'))
    with pytest.raises(ConfigError, match=r"pins\.legacy has publish = true but can build none"):
        published_jobs(load(config_root))


@pytest.mark.parametrize("value", ["0", "-1", "true", '"2"', "1.5"])
def test_a_build_number_must_be_a_positive_integer(config_root: Path, value: str) -> None:
    pins = config_root / "build_config/pins.toml"
    pins.write_text(pins.read_text().replace("[pins.current]\n", f"[pins.current]\nbuild = {value}\n"))
    with pytest.raises(ConfigError, match=r"pins\.current\.build"):
        load(config_root)


def test_a_pins_build_number_reaches_the_provenance_record(config_root: Path) -> None:
    pins = config_root / "build_config/pins.toml"
    assert load(config_root).pin("current").build_tag is None
    pins.write_text(pins.read_text().replace("[pins.current]\n", "[pins.current]\nbuild = 2\n"))
    assert load(config_root).pin("current").build_tag == "2"


def test_finalize_gives_the_wheel_its_pins_build_tag(tmp_path: Path) -> None:
    plain = released_wheel(tmp_path / "a", "0.3.36")
    tagged = released_wheel(tmp_path / "b", "0.3.36", build_tag="2")
    assert plain.name == f"llama_cpp_python-0.3.36-py3-none-{PLATFORM}.whl"
    assert tagged.name == f"llama_cpp_python-0.3.36-2-py3-none-{PLATFORM}.whl"
    parsed = parse_wheel_name(tagged.name)
    assert parsed is not None and parsed.build == (2, "")
    with zipfile.ZipFile(tagged) as archive:
        wheel_file = archive.read("llama_cpp_python-0.3.36.dist-info/WHEEL").decode()
        provenance = json.loads(archive.read("llama_cpp_python-0.3.36.dist-info/llama_wheels.json"))
    assert wheel_file.endswith("Build: 2\n\n") and wheel_file.count("Build:") == 1
    assert provenance["pin"]["build_tag"] == "2"
    with zipfile.ZipFile(plain) as archive:  # without a build tag the build's WHEEL file is kept as it was
        assert "Build:" not in archive.read("llama_cpp_python-0.3.36.dist-info/WHEEL").decode()
    # a tag change is a new file name, never new bytes under an old one
    assert with_build_tag(tagged.name, "3") != tagged.name != plain.name
    assert with_build_tag(tagged.name, None) == plain.name


def test_pip_prefers_the_higher_build_tag(tmp_path: Path) -> None:
    """Real pip against our index over loopback HTTP: of 0.3.36 without a build tag, build 1 and build 2
    (all three published side by side), `==0.3.36` gets build 2."""
    site = tmp_path / "site"
    for tag in (None, "1", "2"):  # three releases, each a rebuild with a new build tag
        released_wheel(tmp_path / "release" / str(tag), "0.3.36", build_tag=tag, payload=f"build {tag}".encode())
        build_index(tmp_path / "release" / str(tag), site)
    served_files = sorted(p.name for p in (site / "cpu/simple/llama-cpp-python").glob("*.whl"))
    assert len(served_files) == 3
    with served(site) as url:
        got = pip_download(f"{url}/cpu/simple", "llama-cpp-python==0.3.36", tmp_path / "got")
    assert got.returncode == 0, got.stdout + got.stderr
    assert [p.name for p in (tmp_path / "got").iterdir()] == [f"llama_cpp_python-0.3.36-2-py3-none-{PLATFORM}.whl"]


def test_release_n_plus_1_keeps_serving_release_n(tmp_path: Path) -> None:
    """Release N publishes 0.3.36; release N+1 brings 0.3.37 (and a reproducible rebuild of 0.3.36: the
    same bytes). The index still serves N's file with N's sha256, and pip installs ==N and ==N+1."""
    site = tmp_path / "site"
    n = released_wheel(tmp_path / "release-n" / "linux-aarch64", "0.3.36")
    build_index(tmp_path / "release-n", site)
    served_n = site / "cpu/simple/llama-cpp-python" / n.name
    digest_n, page_n = sha256(served_n), (site / "cpu/simple/llama-cpp-python/index.html").read_text()
    assert f"{n.name}#sha256={digest_n}" in page_n
    before = {k: v for k, v in tree_digest(site).items() if k.endswith((".whl", ".metadata"))}

    released_wheel(tmp_path / "release-n1" / "linux-aarch64", "0.3.37")
    released_wheel(tmp_path / "release-n1" / "rebuilt", "0.3.36")  # byte-identical to N's
    build_index(tmp_path / "release-n1", site)
    after = tree_digest(site)
    assert all(after[k] == v for k, v in before.items()), "a published file changed"
    page = (site / "cpu/simple/llama-cpp-python/index.html").read_text()
    assert f"{n.name}#sha256={digest_n}" in page
    listing = json.loads((site / "cpu/simple/llama-cpp-python/index.json").read_text())
    assert listing["versions"] == ["0.3.36", "0.3.37"]
    for entry in listing["files"]:  # PEP 658/714 for every version, old and new
        metadata = (site / "cpu/simple/llama-cpp-python" / f"{entry['filename']}.metadata").read_bytes()
        assert entry["core-metadata"] == entry["dist-info-metadata"] == {
            "sha256": hashlib.sha256(metadata).hexdigest()}
        assert f'data-dist-info-metadata="sha256={hashlib.sha256(metadata).hexdigest()}"' in page
    for version in ("0.3.36", "0.3.37"):
        got = pip_download((site / "cpu/simple").as_uri(), f"llama-cpp-python=={version}", tmp_path / version)
        assert got.returncode == 0, got.stdout + got.stderr
        [wheel] = (tmp_path / version).iterdir()
        assert sha256(wheel) == sha256(site / "cpu/simple/llama-cpp-python" / wheel.name)
    assert sha256(tmp_path / "0.3.36" / n.name) == digest_n


def test_a_release_that_would_change_a_published_file_is_refused(tmp_path: Path) -> None:
    site = tmp_path / "site"
    released_wheel(tmp_path / "release-n", "0.3.36")
    build_index(tmp_path / "release-n", site)
    before = tree_digest(site)
    changed = released_wheel(tmp_path / "release-n1", "0.3.36", payload=b"other code")
    result = cli("--log", str(tmp_path / "log"), "index", str(tmp_path / "release-n1"), str(site), timeout=120)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"llama-wheels: error: {changed.name}: already published in the cpu index")
    assert "build = N" in line
    assert tree_digest(site) == before
    # the fix the message names: a build tag, i.e. a new file name beside the old one
    rebuilt = released_wheel(tmp_path / "release-n2", "0.3.36", build_tag="1", payload=b"other code")
    build_index(tmp_path / "release-n2", site)
    published = {k: v for k, v in before.items() if k.endswith((".whl", ".metadata"))}
    assert {k: v for k, v in tree_digest(site).items() if k in published} == published
    assert (site / "cpu/simple/llama-cpp-python" / rebuilt.name).is_file()


def test_two_different_files_under_one_name_in_one_run_are_refused(tmp_path: Path) -> None:
    released_wheel(tmp_path / "dist" / "a", "0.3.36")
    released_wheel(tmp_path / "dist" / "b", "0.3.36", payload=b"other code")
    with pytest.raises(UserError, match="found twice for the cpu index with different bytes"):
        build_index(tmp_path / "dist", tmp_path / "site")
    assert not (tmp_path / "site").exists()

