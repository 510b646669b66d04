"""`pin add` / `pin check` through the command line, what they wrote, and the real release they are tried on."""

from __future__ import annotations

import functools
import json
import urllib.request
from pathlib import Path

from packaging.version import Version

from llama_wheels.stages.fetch import PROJECT, index_url
from tests.support.checkout import cli, pinned, repo_config


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def statuses(stdout: str) -> dict[str, str]:
    return {line.split()[1]: line.split()[0] for line in stdout.splitlines()
            if line.strip().startswith(("clean ", "offset ", "merged ", "conflict ")) and ".patch" in line}


def pin_add(root: Path, *args: str) -> tuple[int, str, str]:
    result = cli("--config", str(root), "--log", str(root.parent / "pin.log"), "pin", "add", *args, cwd=root)
    return result.returncode, result.stdout, result.stderr


@functools.cache
def newest_unpinned_release() -> dict[str, str]:
    """The newest release on the index older than the default pin that has an sdist and no pin: version, sha256."""
    request = urllib.request.Request(f"{index_url()}/{PROJECT}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        listing = json.load(response)
    sdists = {f["filename"]: f["hashes"]["sha256"] for f in listing["files"] if f["filename"].endswith(".tar.gz")}
    taken = {pin.version for pin in repo_config().pins.values()}
    current = Version(pinned().version)
    candidates = [Version(v) for v in listing["versions"] if f"llama_cpp_python-{v}.tar.gz" in sdists
                  and v not in taken and not Version(v).is_prerelease and Version(v) < current]
    version = str(max(candidates))
    return {"version": version, "sha256": sdists[f"llama_cpp_python-{version}.tar.gz"]}
