"""`llama-wheels pin add` on a real llama-cpp-python release from PyPI that no pin has yet (the newest one older
than the default pin), into a copy of build_config/; and the same release with a patch made to conflict, and a
version PyPI does not have. Network: the sdists (~70 MB each) are downloaded once into the cache, by sha256.
Nothing compiles here."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest

from llama_wheels.config import load
from llama_wheels.core.cache import Cache
from tests.support.checkout import cli, pinned
from tests.support.pins import newest_unpinned_release, pin_add, snapshot, statuses


@pytest.fixture(scope="module")
def release() -> dict[str, str]:
    """The newest release on the index older than the default pin that has an sdist and no pin."""
    return newest_unpinned_release()


def test_pin_add_takes_a_real_release(config_root: Path, release: dict[str, str], cache: Cache) -> None:
    version = release["version"]
    before = (config_root / "build_config/pins.toml").read_text()
    code, out, err = pin_add(config_root, version, "--name", "probe")
    assert code == 0, out + err
    series = pinned().patches
    # every patch of the default pin's series reported, none stopped the others, all carried over
    assert set(statuses(out)) == set(series) and "conflict" not in statuses(out).values()
    after = (config_root / "build_config/pins.toml").read_text()
    assert after.startswith(before)
    pin = load(config_root).pin("probe")
    assert (pin.version, pin.sdist_sha256, pin.patches) == (version, release["sha256"], series)
    assert dict(pin.switches) == dict(pinned().switches)  # extends the default pin
    assert re.fullmatch(r"[0-9a-f]{40}", pin.llama_cpp_commit)
    # the commit read from the submodule's HEAD agrees with what the release's CHANGELOG names
    sdist = cache.root / "sdists" / pin.sdist_sha256 / pin.sdist_filename
    with tarfile.open(sdist) as archive:
        member = archive.extractfile(f"llama_cpp_python-{version}/CHANGELOG.md")
        assert member is not None
        changelog = member.read().decode()
    section = changelog[changelog.index(f"## [{version}]"):]
    assert pin.llama_cpp_commit.startswith(re.search(r"llama\.cpp@([0-9a-f]{7,40})", section).group(1))  # type: ignore[union-attr]
    # refreshed patches, headers kept
    for name in series:
        new = (config_root / "patches" / version / name).read_text()
        old = (config_root / "patches" / pinned().version / name).read_text()
        assert new.split("\n---\n")[0] == old.split("\n---\n")[0]
    # the new pin checks clean and plans every target the default pin does
    check = cli("--config", str(config_root), "--log", str(config_root.parent / "check.log"), "pin", "check",
                "probe", cwd=config_root)
    assert check.returncode == 0, check.stdout + check.stderr
    assert all(status == "clean" for status in statuses(check.stdout).values())
    assert "result     ok" in check.stdout


def _break_first_context_line(patch: Path) -> str:
    """Change the first context line of the patch's first hunk: the hunk can no longer be placed anywhere."""
    lines = patch.read_text().split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("@@ "))
    at = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(" ") and lines[i].strip())
    lines[at] = lines[at] + "  # no such line"
    patch.write_text("\n".join(lines))
    return lines[at]


def test_a_patch_made_to_conflict_is_reported_and_nothing_is_written(config_root: Path,
                                                                   release: dict[str, str]) -> None:
    victim = pinned().patches[-1]
    broken = _break_first_context_line(config_root / "patches" / pinned().version / victim)
    before = snapshot(config_root)
    code, out, err = pin_add(config_root, release["version"])
    assert code == 2, out + err
    reported = statuses(out)
    assert reported[victim] == "conflict" and set(reported) == set(pinned().patches)
    assert f"      | {broken}" in out  # its rejected hunk, as written
    assert f"pin add {release['version']}: nothing written: patch {victim} does not apply" in err
    assert snapshot(config_root) == before


def test_a_version_the_index_does_not_have(config_root: Path) -> None:
    major, minor, micro = pinned().version.split(".")
    missing = f"{major}.{minor}.{int(micro) + 1000}"
    before = snapshot(config_root)
    code, out, err = pin_add(config_root, missing)
    assert code == 2 and "Traceback" not in err, out + err
    [line] = [line for line in err.splitlines() if line.startswith("llama-wheels: error:")]
    assert line.startswith(f"llama-wheels: error: llama_cpp_python-{missing}.tar.gz is not on ")
    assert line.endswith("; check the VERSION given to pin add")
    assert snapshot(config_root) == before

