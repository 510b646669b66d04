"""Every locked tool installs as a binary wheel on every platform that installs it.

A step that installs a lock passes ``--only-binary :all:``: a locked package without a wheel for that platform
would otherwise be built from its sdist inside cibuildwheel's container (or on a runner), with whatever
compiler is there, or fail late. This asks real pip, against PyPI, to resolve each lock for each platform
that installs it, binary-only and by hash (``--dry-run``: nothing is installed), and checks what it chose.

Which lock is installed where (from the generated files):
    requirements/ci.txt           the runner jobs (ubuntu-24.04 x86_64, ubuntu-24.04-arm, macos-14) and
                                  cibuildwheel's before-build (manylinux2014 and musllinux_1_2 aarch64
                                  containers, the macOS runner)
    requirements/wheel-tests.txt  cibuildwheel's before-test (the same three build environments)
    requirements/docs.txt         release.yml's index job (ubuntu-24.04 x86_64), which renders the docs site
pip evaluates environment markers for this host (Linux): a Darwin-only package (delocate) is not checked
for macOS here.
"""

from __future__ import annotations

import json
import os
import platform as platform_module
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name, parse_wheel_filename

from llama_wheels.ci import workflows
from tests.support.checkout import REPO

MANYLINUX_X86_64 = "manylinux_2_39_x86_64"  # ubuntu-24.04 (glibc 2.39)
MANYLINUX_AARCH64 = "manylinux_2_17_aarch64"  # cibuildwheel's manylinux2014 container (glibc 2.17)
MUSLLINUX_AARCH64 = "musllinux_1_2_aarch64"  # cibuildwheel's musllinux_1_2 container
MACOS_ARM64 = "macosx_14_0_arm64"  # macos-14
INSTALLS = {
    "requirements/ci.txt": (MANYLINUX_X86_64, MANYLINUX_AARCH64, MUSLLINUX_AARCH64, MACOS_ARM64),
    workflows.WHEEL_TESTS_LOCK: (MANYLINUX_AARCH64, MUSLLINUX_AARCH64, MACOS_ARM64),
    workflows.DOCS_LOCK: (MANYLINUX_X86_64,),  # release.yml's index job
}


# pip evaluates a lock's markers (python_full_version < '3.11.5') for this host's Python but checks Requires-Python
# against --python-version: both must be one version, this host's, which is a CI Python (workflows.PYTHON: setup-python
# installs its newest patch release).
MARKER_PYTHON = platform_module.python_version()
assert MARKER_PYTHON.startswith(f"{workflows.PYTHON}."), f"run this test with Python {workflows.PYTHON}"


def compatible(platform: str) -> list[str]:
    """The platform tags an installer there accepts (pip's --platform takes each one literally, except that it
    expands macOS versions itself)."""
    kind, _, rest = platform.partition("_")
    if kind == "manylinux":
        major, minor, arch = rest.split("_", 2)
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        return [f"manylinux_{major}_{m}_{arch}" for m in range(int(minor), 4, -1)] + [
            f"{name}_{arch}" for m, name in legacy.items() if m <= int(minor)]
    if kind == "musllinux":
        major, minor, arch = rest.split("_", 2)
        return [f"musllinux_{major}_{m}_{arch}" for m in range(int(minor), -1, -1)]
    return [platform]


def binary_resolution(lock: Path, platform: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    platforms = [arg for tag in compatible(platform) for arg in ("--platform", tag)]
    return subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", "install", "--dry-run",
         "--ignore-installed", "--target", str(tmp / "target"), *platforms, "--python-version",
         MARKER_PYTHON, "--implementation", "cp", "--only-binary=:all:", "--no-deps", "--require-hashes",
         "-r", str(lock), "--report", str(tmp / "report.json"), "--quiet"],
        capture_output=True, text=True, env=env, timeout=900)


def test_the_runners_and_containers_install_the_locks_binary_only() -> None:
    text = "\n".join((REPO / path).read_text() for path in (workflows.WORKFLOW, workflows.RELEASE))
    assert workflows.INSTALL.startswith("python -m pip install --require-hashes --only-binary :all: -r ")
    assert "pip install --require-hashes -r" not in text
    assert f"--only-binary :all: -r {{project}}/{workflows.WHEEL_TESTS_LOCK}" in (REPO / workflows.CIBW_CONFIG
                                                                                ).read_text()
    hook = (REPO / "scripts/cibw-before-build.sh").read_text()
    assert '--only-binary :all: -r "$project/requirements/ci.txt"' in hook


@pytest.mark.parametrize(("lock", "platform"), [(lock, platform) for lock, platforms in INSTALLS.items()
                                                for platform in platforms])
def test_every_locked_package_has_a_wheel_for_the_platform(lock: str, platform: str, tmp_path: Path) -> None:
    result = binary_resolution(REPO / lock, platform, tmp_path)
    assert result.returncode == 0, f"{lock} on {platform}: {result.stderr.strip().splitlines()[-3:]}"
    installed = json.loads((tmp_path / "report.json").read_text())["install"]
    # what pip had to install: every lock entry whose marker holds here (pip evaluates markers for this host)
    expected = set()
    for line in (REPO / lock).read_text().splitlines():
        if "==" in line and not line.startswith(("#", " ")):
            requirement, _, marker = line.rstrip(" \\").partition(";")
            if not marker.strip() or Marker(marker.strip()).evaluate():
                expected.add(canonicalize_name(requirement.split("==")[0]))
    assert {canonicalize_name(item["metadata"]["name"]) for item in installed} == expected, (lock, platform)
    accepted = {"any", *compatible(platform)}
    for item in installed:
        name = item["download_info"]["url"].rsplit("/", 1)[1]
        assert name.endswith(".whl"), f"{lock}: {item['metadata']['name']} on {platform} would be built from {name}"
        platforms = {tag.platform for tag in parse_wheel_filename(name)[3]}
        assert platforms & accepted or platform.startswith("macosx"), (name, platform)


def test_a_platform_without_wheels_fails_the_check(tmp_path: Path) -> None:
    """The sabotage: a lock resolved for a platform its compiled packages have no wheel for is refused."""
    result = binary_resolution(REPO / "requirements/ci.txt", "musllinux_1_2_armv7l", tmp_path)
    assert result.returncode != 0
    assert "No matching distribution" in result.stderr or "Could not find a version" in result.stderr
