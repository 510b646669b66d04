"""What a wheel's file name and its ``llama_cpp/lib`` say, read in one place for every module.

- The file name (PEP 427 ``NAME-VERSION[-BUILD]-PY-ABI-PLATFORM.whl``) is parsed by
  ``packaging.utils.parse_wheel_filename``, which knows build tags, compressed tag sets
  (``py2.py3``, ``manylinux_2_17_aarch64.manylinux2014_aarch64``) and PEP 503 name normalization.
- The CPU code a llama-cpp-python wheel ships: one ``llama_cpp/lib/libggml-cpu-<variant>.so`` (on macOS too:
  ggml's loader looks for ``.so``; ``.dylib`` is accepted) per variant of a runtime-dispatch build
  (``GGML_CPU_ALL_VARIANTS``), or, for a build fixed to
  one ISA, ``llama_cpp/lib/cpu-isa.txt`` naming the ``-march`` it was compiled for (patch 0005).
"""

from __future__ import annotations

import ast
import errno
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from packaging.tags import Tag
from packaging.utils import BuildTag, InvalidWheelFilename, NormalizedName, parse_wheel_filename
from packaging.version import Version

from llama_wheels.core.errors import UserError, one_line

LIB_DIR = "llama_cpp/lib"
CPU_ISA = f"{LIB_DIR}/cpu-isa.txt"
IMPORT_CHECK = "llama_cpp/_backends.py"  # the import guard the patches add (0.3.36/0002, 0.3.4/0005)
_VARIANT = re.compile(rf"^{re.escape(LIB_DIR)}/libggml-cpu-([\w.]+)\.(?:so|dylib)$")


@dataclass(frozen=True, kw_only=True)
class WheelName:
    project: NormalizedName  # PEP 503 normalized: llama-cpp-python
    version: Version
    build: BuildTag  # () when the name has no build tag
    tags: frozenset[Tag]

    @property
    def platforms(self) -> frozenset[str]:
        """The platform tags, e.g. {"manylinux_2_17_aarch64", "manylinux2014_aarch64"}."""
        return frozenset(tag.platform for tag in self.tags)


def parse_wheel_name(filename: str) -> WheelName | None:
    """The parts of a wheel file name; None when ``filename`` is not a valid one."""
    try:
        project, version, build, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    return WheelName(project=project, version=version, build=build, tags=tags)


def wheel_name(path: Path) -> WheelName:
    """The parts of ``path``'s wheel file name; a UserError naming it when it is not one."""
    parsed = parse_wheel_name(path.name)
    if parsed is None:
        raise UserError(f"{path}: not a wheel file name (NAME-VERSION-PY-ABI-PLATFORM.whl); pass a built .whl")
    return parsed


# What a damaged archive raises while it is opened or a member read: a cut or overwritten central directory,
# a member whose local header, compressed stream or CRC does not match, a name or text that is not UTF-8.
_CORRUPT = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError, UnicodeDecodeError)


@contextmanager
def open_wheel(path: Path, *, fix: str = "pass a .whl that `llama-wheels build` wrote") -> Iterator[zipfile.ZipFile]:
    """``path`` opened as a wheel's zip archive, for every command that reads a user's wheel: a missing path, a
    directory, a name that is no wheel's, an unreadable file, a truncated or corrupt archive is one UserError
    naming ``path`` and ``fix``. Every member is read (and its CRC checked) first: a wheel is judged whole or not
    at all, as pip installs it."""
    if not path.exists():
        raise UserError(f"{path}: no such file; {fix}")
    if not path.is_file():
        raise UserError(f"{path}: not a file (a directory?); {fix}")
    if parse_wheel_name(path.name) is None:
        raise UserError(f"{path}: not a wheel file name (NAME-VERSION-PY-ABI-PLATFORM.whl); {fix}")
    try:
        with zipfile.ZipFile(path) as archive:
            if (bad := archive.testzip()) is not None:
                raise zipfile.BadZipFile(f"member {bad!r} does not match its CRC or its header")
            yield archive
    except PermissionError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror}); make it readable for this user") from None
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: a seek to an offset a corrupt directory gives
            raise
        raise UserError(f"{path}: a truncated or corrupt zip archive ({exc.strerror}); build or download it "
                        "again") from None
    except _CORRUPT as exc:
        raise UserError(f"{path}: a truncated or corrupt zip archive ({one_line(str(exc), 80)}); "
                        "build or download it again") from None
    except RuntimeError as exc:  # after _CORRUPT: NotImplementedError is one
        if "encrypted" not in str(exc):  # zipfile's word for a member whose encryption flag is set
            raise
        raise UserError(f"{path}: a member is marked encrypted, which no wheel is (a corrupt header?); build or "
                        "download it again") from None


def with_build_tag(filename: str, build_tag: str | None) -> str:
    """``filename`` with its PEP 427 build tag set to ``build_tag`` (None: without one).

    A build tag must start with a digit; a wheel name with another build tag gets this one instead.
    """
    if parse_wheel_name(filename) is None:
        raise ValueError(f"{filename}: not a wheel file name")
    if build_tag is not None and not re.match(r"^\d\w*$", build_tag):
        raise ValueError(f"{build_tag!r}: a build tag is a number, optionally followed by letters")
    parts = filename[:-len(".whl")].split("-")
    head, tags = parts[:2], parts[-3:]  # NAME-VERSION ... PY-ABI-PLATFORM (no part holds a "-")
    renamed = "-".join([*head, *([build_tag] if build_tag else []), *tags]) + ".whl"
    parsed = parse_wheel_name(renamed)
    assert parsed is not None and bool(parsed.build) == bool(build_tag), renamed
    return renamed


def libc_of_tag(platform_tag: str) -> str | None:
    """The C library a Linux platform tag promises: ``musl`` (musllinux_*), ``glibc`` (manylinux*, linux_*),
    else None. The one rule a wheel's tag is read by (the emulated bed it runs in, what inspect reports)."""
    if platform_tag.startswith("musllinux_"):
        return "musl"
    if platform_tag.startswith(("manylinux", "linux_")):
        return "glibc"
    return None


def variant_of(path: str) -> str | None:
    """The CPU variant whose library ``path`` (``llama_cpp/lib/libggml-cpu-<variant>.so``) is, else None."""
    match = _VARIANT.match(path)
    return match[1] if match else None


def cpu_variants(paths: Iterable[str]) -> list[str]:
    """The CPU variants among a wheel's (or an installed package's) paths, sorted by name."""
    return sorted(v for p in paths if (v := variant_of(p)) is not None)


def fixed_isa(archive: zipfile.ZipFile) -> str | None:
    """What ``llama_cpp/lib/cpu-isa.txt`` of the wheel ``archive`` names; None if it has none (or it is empty)."""
    if CPU_ISA not in archive.namelist():
        return None
    return archive.read(CPU_ISA).decode().strip() or None


def import_checked(archive: zipfile.ZipFile) -> frozenset[str]:
    """The features the wheel's import guard (``llama_cpp/_backends.py``) verifies in the CPU's hwcaps before
    any library loads: the keys of its ``_ARM_HWCAPS`` table, read without running it; empty without a guard.
    ValueError when the file is there but cannot be read as Python."""
    if IMPORT_CHECK not in archive.namelist():
        return frozenset()
    try:
        tree = ast.parse(archive.read(IMPORT_CHECK))
    except (SyntaxError, ValueError) as exc:
        raise ValueError(f"{IMPORT_CHECK} is not valid Python ({exc})") from None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(target, ast.Name) and target.id == "_ARM_HWCAPS" for target in node.targets)):
            return frozenset(key.value for key in node.value.keys
                             if isinstance(key, ast.Constant) and isinstance(key.value, str))
    return frozenset()
