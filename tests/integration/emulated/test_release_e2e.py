"""End to end, as a downstream user: pip installs our wheel from the static index and it runs.

The default wheel (``cpu`` family) is built through the CLI (a cache hit when test_build.py built it
already), indexed with ``llama-wheels index``, and installed by **pip running inside the emulated arm64
Python** (Debian's python3.11 under the pinned qemu-aarch64, neoverse-n1): pip itself decides that the
manylinux_2_17_aarch64 wheel fits that interpreter, reads the ``cpu/simple`` page from a file:// URL and
checks the wheel against the page's ``#sha256=`` fragment. The Debian sysroot has no pip, so pip's own
wheel (pinned by sha256, downloaded once from PyPI) is put on the guest's PYTHONPATH; ``--isolated``
keeps the build machine's pip configuration out (qemu falls back to host paths such as /etc/xdg/pip).
``--no-deps``: llama-cpp-python's dependencies (numpy, jinja2, ...) come from the sysroot's pinned
site-packages, not from our index, which only serves llama-cpp-python.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

from llama_wheels.config.cpus import load_cpus
from llama_wheels.core.cache import Cache, atomic_path
from llama_wheels.emulation.qemu import run_python
from llama_wheels.emulation.sysroot import ensure_sysroot
from llama_wheels.judges.verify import run_smoke
from tests.support.checkout import REPO, pinned
from tests.support.wheelfactory import record_data

GUEST_PIP = "pip-26.3-py3-none-any.whl"


GUEST_PIP_SHA256 = "f3b60b20ffaadd4415ed7957212a38ac63fa4c5fa375bd0f4a797777940fad13"  # PyPI's listing


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llama_wheels", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=5400)


def guest_pip(cache: Cache) -> Path:
    """pip's wheel unpacked (pure Python), for the guest's PYTHONPATH; downloaded once, sha256 checked."""
    home = cache.root / "guest-pip" / GUEST_PIP_SHA256[:16]
    if (home / "pip" / "__main__.py").is_file():
        return home
    with atomic_path(home, directory=True) as tmp:
        requirement = tmp / "requirements.txt"
        requirement.write_text(f"pip==26.3 --hash=sha256:{GUEST_PIP_SHA256}\n")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--require-hashes", "-r", str(requirement), "-d", str(tmp / "dl")],
                       check=True, capture_output=True, timeout=600)
        wheel = tmp / "dl" / GUEST_PIP
        assert hashlib.sha256(wheel.read_bytes()).hexdigest() == GUEST_PIP_SHA256
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(tmp)
    return home


def test_pip_in_the_emulated_python_installs_our_wheel_from_the_index(tmp_path: Path, cache: Cache) -> None:
    dist, site = tmp_path / "dist", tmp_path / "site"
    built = cli("--log", str(tmp_path / "build.log"), "build", "--dist", str(dist))
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = dist.glob("*.whl")
    ours = hashlib.sha256(wheel.read_bytes()).hexdigest()
    indexed = cli("--log", str(tmp_path / "index.log"), "index", str(dist), str(site))
    assert indexed.returncode == 0, indexed.stderr
    url = (site / "cpu" / "simple").as_uri()

    sysroot = ensure_sysroot(cache)
    cpu = load_cpus(REPO)["neoverse-n1"]
    target, report = tmp_path / "target", tmp_path / "report.json"
    installed = run_python(
        sysroot, cpu,
        ["-m", "pip", "--isolated", "--disable-pip-version-check",
         "install", "--no-cache-dir", "--no-compile", "--index-url", url, "--only-binary=:all:", "--no-deps",
         "--target", str(target), "--report", str(report), f"llama-cpp-python=={pinned().version}"],
        pythonpath=[guest_pip(cache)], timeout=1200)
    assert installed.returncode == 0, "\n".join(installed.tail)
    entry = json.loads(report.read_text())["install"][0]
    assert entry["download_info"]["url"] == f"{url}/llama-cpp-python/{wheel.name}"
    assert entry["download_info"]["archive_info"]["hashes"]["sha256"] == ours  # what pip verified

    smoke = run_smoke(target, cpu, cache, label=f"{wheel.name} installed by pip")
    assert smoke.package == target / "llama_cpp" / "__init__.py"  # what pip installed, nothing else
    assert smoke.layout == "q4_0_4x4"  # neoverse-n1: dotprod, repacked
    dist_info = target / f"llama_cpp_python-{pinned().version}.dist-info"
    installed_record = json.loads((dist_info / "llama_wheels.json").read_text())
    assert installed_record == record_data(wheel)
    assert installed_record["target"]["index"] == "cpu"
    print(f"\npip {GUEST_PIP} in emulated python3.11 ({cpu.name}) installed {wheel.name} sha256 {ours} "
          f"from {url}; variant {smoke.variant}, repack {smoke.layout}, greedy tokens {list(smoke.tokens)}")

