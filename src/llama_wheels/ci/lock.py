"""``llama-wheels lock [--check]``: hash-locked requirements files, generated from pyproject.toml.

Every workflow step (and the cibuildwheel before-build hook, and scripts/bootstrap.sh) installs the
project's Python dependencies with ``pip install --require-hashes -r <lock>`` and then the project itself
with ``--no-deps --no-build-isolation``: no transitive dependency is resolved fresh at release time, and
every file pip installs has a sha256 recorded here. The locks:

- ``requirements/ci.txt``: the project's dependencies and its build backend (what CI and the cibuildwheel
  hook need to build, repair, audit and index wheels);
- ``requirements/test.txt``: the same plus the ``test`` extra (the test suite, its linters and checkers);
- ``requirements/wheel-tests.txt``: what cibuildwheel's ``before-test`` installs into the venv a wheel is
  tested in (``workflows.TEST_REQUIRES``: wheel_tests/ and the models module it imports);
- ``requirements/docs.txt``: the dependencies and the ``docs`` extra, for the release's index job, which renders
  the documentation site beside the package index.

They are made by uv (``uv pip compile --universal --generate-hashes``, uv pinned in the test extra), for
the CI Python (``workflows.PYTHON``) on every platform at once: each locked version lists the hashes of
all its files, so one lock serves the x86_64 and aarch64 Linux runners, the manylinux2014 container and
the macOS runner. ``CONSTRAINTS`` keeps versions installable where the newest is not (see there).

Drift: each lock's header carries the sha256 of its inputs (the requirement lists of pyproject.toml, the
constraints, the Python version, the uv version); ``check`` (and tests/unit/test_lock.py) recomputes it offline
and also checks that the lock pins every requirement of pyproject.toml with a version its specifier
allows. Changing a pin in pyproject.toml without ``llama-wheels lock`` fails the check.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from llama_wheels.ci.workflows import DOCS_LOCK, PYTHON, TEST_REQUIRES
from llama_wheels.core import runner
from llama_wheels.core.cache import atomic_path
from llama_wheels.core.errors import ConfigError, ToolchainError

UV = "uv==0.13.8"  # the resolver; also pinned in pyproject.toml's test extra (tests/unit/test_lock.py)
# Versions the lock must not take although the specifiers allow them, each with its reason.
CONSTRAINTS = {
    # numpy 2.3+ ships only manylinux_2_28 aarch64 wheels: pip inside cibuildwheel's manylinux2014
    # container (glibc 2.17) would build the sdist. 2.2.x has manylinux2014 aarch64 wheels for cp311.
    "numpy": "<2.3",
}
INPUTS = "# inputs sha256: "


@dataclass(frozen=True, kw_only=True)
class Lock:
    path: Path  # relative to the checkout
    extras: tuple[str, ...]
    tools: tuple[str, ...] = ()  # installers locked too (not requirements of the project)
    # a fixed list instead of the project's requirements (the in-wheel test suite's own, for cibuildwheel)
    only: tuple[str, ...] | None = None
    # installed in cibuildwheel's manylinux2014 container too: CONSTRAINTS apply
    manylinux2014: bool = True


LOCKS = (Lock(path=Path("requirements/ci.txt"), extras=()),
         # scripts/bootstrap.sh: its venv's pip is brought to the locked version by the same install
         # (on the developer's machine and the matrix job's Debian 12: newer glibc, no constraint; mypy
         # checks the code against the numpy typing of the newest numpy)
         Lock(path=Path("requirements/test.txt"), extras=("test",), tools=("pip",), manylinux2014=False),
         # cibuildwheel's before-test, in the venv the wheel is tested in (wheel_tests/ + the models module)
         Lock(path=Path("requirements/wheel-tests.txt"), extras=(), only=TEST_REQUIRES),
         # the release's index job (ubuntu-24.04): the project and MkDocs, which renders the documentation
         # site it publishes beside the index (`llama-wheels docs build`)
         Lock(path=Path(DOCS_LOCK), extras=("docs",), manylinux2014=False))


def _pyproject(root: Path) -> dict[str, object]:
    with (root / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


def requirements(root: Path, lock: Lock) -> list[str]:
    """What ``lock`` must satisfy: the build backend, the dependencies and the extras' requirements
    (a self-reference such as ``llama-wheels[bench]`` expanded)."""
    if lock.only is not None:
        return list(lock.only)
    data = _pyproject(root)
    project = data["project"]
    assert isinstance(project, dict)
    build_system = data["build-system"]
    assert isinstance(build_system, dict)
    name = canonicalize_name(project["name"])
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    out = [*build_system["requires"], *project["dependencies"], *lock.tools]
    todo, seen = list(lock.extras), set()
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        for spec in optional[extra]:
            req = Requirement(spec)
            if canonicalize_name(req.name) == name:
                todo += sorted(req.extras)
            else:
                out.append(spec)
    return out


def uv_version() -> str:
    uv = runner.find_tool("uv")
    if uv is None:
        raise ToolchainError(f"uv is missing: run scripts/bootstrap.sh (pip install '{UV}')")
    return runner.run([uv, "--version"], capture=True).split()[1]


def constraints(lock: Lock) -> dict[str, str]:
    return CONSTRAINTS if lock.manylinux2014 else {}


def inputs_digest(root: Path, lock: Lock, uv: str) -> str:
    data = {"requirements": requirements(root, lock), "constraints": constraints(lock), "python": PYTHON, "uv": uv}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def generate(root: Path) -> list[Path]:
    """Resolve and write every lock (each atomically); return the paths written."""
    uv = runner.find_tool("uv")
    version = uv_version()
    if uv is None or f"uv=={version}" != UV:
        raise ToolchainError(f"uv {version} is not the pinned {UV}: run scripts/bootstrap.sh")
    written = []
    with tempfile.TemporaryDirectory(prefix="llama-wheels-lock-") as tmp:
        for lock in LOCKS:
            limits = Path(tmp) / f"{lock.path.stem}-constraints.txt"
            limits.write_text("".join(f"{n}{s}\n" for n, s in sorted(constraints(lock).items())))
            source = Path(tmp) / f"{lock.path.stem}.in"
            source.write_text("\n".join(requirements(root, lock)) + "\n")
            out = Path(tmp) / lock.path.name
            runner.run([uv, "pip", "compile", source, "--universal", "--generate-hashes", "--python-version",
                        PYTHON, "--constraint", limits, "--no-header",
                        "--output-file", out], cwd=Path(tmp), capture=True)
            origin = ("workflows.TEST_REQUIRES" if lock.only is not None
                      else f"pyproject.toml ({', '.join(lock.extras) or 'no'} extras)")
            header = (f"# Generated by `llama-wheels lock` from {origin} with {UV} for Python {PYTHON}, every "
                      "platform -- do not edit; run it again.\n"
                      f"{INPUTS}{inputs_digest(root, lock, version)}\n")
            text = header + out.read_text().replace(str(source), lock.path.stem + ".in")
            path = root / lock.path
            if path.is_file() and path.read_text() == text:
                continue
            with atomic_path(path) as tmp_path:
                tmp_path.write_text(text)
                tmp_path.chmod(0o644)
            written.append(lock.path)
    return written


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\#]+?))?\s*\\?\s*(?:#.*)?$")


def pins(text: str) -> dict[str, list[tuple[Version, Marker | None]]]:
    """The ``name==version ; marker`` lines of a lock, by normalized name."""
    found: dict[str, list[tuple[Version, Marker | None]]] = {}
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            marker = Marker(match[3]) if match[3] else None
            found.setdefault(canonicalize_name(match[1]), []).append((Version(match[2]), marker))
    return found


def check(root: Path, *, uv: str | None = None) -> list[str]:
    """What is wrong with the committed locks (empty: nothing), offline.

    ``uv``: the uv version the digest is computed for (default: the pinned one).
    """
    version = uv or UV.split("==")[1]
    problems = []
    for lock in LOCKS:
        path = root / lock.path
        if not path.is_file():
            problems.append(f"{lock.path}: missing")
            continue
        text = path.read_text()
        digest = next((ln[len(INPUTS):] for ln in text.splitlines() if ln.startswith(INPUTS)), None)
        if digest != inputs_digest(root, lock, version):
            problems.append(f"{lock.path}: made from other inputs than pyproject.toml's requirements now")
        locked = pins(text)
        for spec in requirements(root, lock):
            req = Requirement(spec)
            versions = locked.get(canonicalize_name(req.name), [])
            if not versions:
                problems.append(f"{lock.path}: does not pin {req.name} (pyproject.toml: {spec})")
            for pinned, _ in versions:
                if not req.specifier.contains(pinned, prereleases=True):
                    problems.append(f"{lock.path}: pins {req.name}=={pinned}, pyproject.toml wants {spec}")
        lines = text.splitlines()
        unhashed = [line.split()[0] for i, line in enumerate(lines) if _PIN.match(line)
                    and not (i + 1 < len(lines) and lines[i + 1].lstrip().startswith("--hash=sha256:"))]
        if unhashed:
            problems.append(f"{lock.path}: {unhashed[0]} has no --hash (pip --require-hashes would refuse it)")
    return problems


def require_current(root: Path) -> None:
    problems = check(root)
    if problems:
        raise ConfigError(f"{problems[0]}{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; "
                          "run `llama-wheels lock` and commit requirements/")
