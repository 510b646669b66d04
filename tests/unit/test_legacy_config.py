"""The legacy (0.3.4) pins and their patch series, checked without building anything."""

from __future__ import annotations

import re

from llama_wheels.config import load
from llama_wheels.plan import plan
from tests.support.checkout import REPO, pinned

PATCH_DIR = REPO / "patches" / pinned("legacy").version


def test_unpatched_pin_is_the_legacy_pin_minus_the_fixes() -> None:
    config = load(REPO)
    legacy, unpatched = config.pin("legacy"), config.pin("legacy-unpatched")
    assert (unpatched.version, unpatched.sdist_sha256, unpatched.llama_cpp_commit) == (
        legacy.version, legacy.sdist_sha256, legacy.llama_cpp_commit)
    # the comparison must not differ in what it compiles with, only in the source it compiles
    common = set(unpatched.switches)
    assert {k: legacy.switches[k] for k in common} == dict(unpatched.switches)
    assert unpatched.patches == legacy.patches[:1] == ("0001-install-only-the-package.patch",)
    for target in ("linux-aarch64-armv8.2-dotprod", "linux-aarch64-armv8.0"):
        [a], [b] = plan(config, [target], "legacy"), plan(config, [target], "legacy-unpatched")
        assert a.cmake_args() == b.cmake_args()


def test_the_repack_reports_comparison_pin_is_the_current_series_minus_0007_only() -> None:
    """`llama-wheels repack-report` shows what patch 0007 buys: its comparison wheel must have every other patch
    of the current series (a patch added to `current` and not to it would be credited to 0007, or judged by
    an oracle that expects it: 0009's scores)."""
    config = load(REPO)
    current, without = config.pin("current"), config.pin("current-without-0007")
    assert (without.version, without.sdist_sha256) == (current.version, current.sdist_sha256)
    assert without.patches == tuple(p for p in current.patches if not p.startswith("0007-"))


def test_every_legacy_patch_is_listed_and_documented() -> None:
    config = load(REPO)
    listed = config.pin("legacy").patches
    assert sorted(p.name for p in PATCH_DIR.glob("*.patch")) == sorted(listed)
    text = (REPO / "build_config" / "pins.toml").read_text()
    for name in listed:
        # one comment above each entry in pins.toml, and the header parts the project asks for
        assert re.search(rf"#[^\n]*\n\s*\"{re.escape(name)}\"", text), f"{name} has no comment in pins.toml"
        header = (PATCH_DIR / name).read_text().split("\n---\n", 1)[0]
        for part in ("Problem:", "Fix:", "Upstream:", "Proved by:"):
            assert part in header, f"{name}: header lacks {part!r}"


def test_proving_tests_named_in_patch_headers_exist() -> None:
    """Every test file (and test) a patch header of any series names exists: the headers follow the tests when
    they move (the tier folders)."""
    tests = {p.relative_to(REPO).as_posix(): p.read_text() for p in
             [*REPO.glob("tests/**/*.py"), *REPO.glob("wheel_tests/*.py")]}
    named = 0
    for patch in REPO.glob("patches/*/*.patch"):
        header = " ".join(patch.read_text().split("\n---\n", 1)[0].split())
        for path, name in re.findall(r"(?<![\w/])((?:tests|wheel_tests)/[\w/]+\.py)(?:::(\w+))?", header):
            named += 1
            assert path in tests, f"{patch.name} names {path}, which does not exist"
            assert not name or f"def {name}(" in tests[path], f"{patch.name} names {path}::{name}, which does not exist"
    assert named >= 10, "the header pattern found (almost) no test paths: the check would pass vacuously"


def test_upstream_references_are_stated_as_facts() -> None:
    headers = {p.name: p.read_text().split("\n---\n", 1)[0] for p in PATCH_DIR.glob("*.patch")}
    assert "PR #10961" in headers["0002-ggml-cpu-dotprod-hwcap-bit.patch"]
    assert "3327bb0f8" in headers["0002-ggml-cpu-dotprod-hwcap-bit.patch"]
    assert "PR #12004" in headers["0003-unused-tensors-stay-out-of-cpu-aarch64.patch"]
    assert "PR #14990" in headers["0004-use-extra-bufts.patch"]

