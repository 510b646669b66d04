"""Small, real wheel files for the fast tests of finalize, inspect and index (no compiler involved)."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llama_wheels.binaries import record as rec
from llama_wheels.config.platforms import platform as platform_of
from llama_wheels.stages.finalize import write_wheel
from tests.support.checkout import pinned

# The wheels are of the default pin's release (build_config/pins.toml), whichever it is.
PIN = pinned()
VERSION = PIN.version
NAME = f"llama_cpp_python-{VERSION}-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.whl"
MUSL_NAME = f"llama_cpp_python-{VERSION}-py3-none-musllinux_1_2_aarch64.whl"  # the linux-aarch64-musl target's
DIST_INFO = f"llama_cpp_python-{VERSION}.dist-info"
# llama-cpp-python's own core metadata (its dependencies are what pip must get from PyPI)
METADATA = (f"Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: {VERSION}\nRequires-Python: >=3.8\n"
            "Requires-Dist: typing-extensions>=4.5.0\nRequires-Dist: numpy>=1.20.0\n"
            "Requires-Dist: diskcache>=5.6.1\nRequires-Dist: jinja2>=2.11.3\n\n").encode()
WHEEL = (b"Wheel-Version: 1.0\nGenerator: scikit-build-core 1.1.2\nRoot-Is-Purelib: false\n"
         b"Tag: py3-none-manylinux_2_17_aarch64\nTag: py3-none-manylinux2014_aarch64\n\n")
EPOCH = 1764000000


def record(*, target: str = "linux-aarch64", index: str = "cpu", epoch: int = EPOCH,
           platform: str = "linux-aarch64") -> rec.Record:
    """A complete record, as ``provenance.collect`` writes one."""
    return rec.Record(
        schema=rec.SCHEMA,
        pin=rec.PinRecord(name=PIN.name, llama_cpp_python=VERSION, llama_cpp_commit=PIN.llama_cpp_commit,
                          sdist=rec.Sdist(filename=PIN.sdist_filename, sha256="83" * 32)),
        patches=(rec.PatchRecord(name="0001-install-only-the-package.patch", sha256="8d" * 32),),
        target=rec.TargetRecord(name=target, platform=platform, index=index, switches={"repack": True},
                                platform_spec=platform_of(platform), cpu_variants={}),
        cmake=rec.CMakeRecord(config_settings=("build-dir=<build>", "cmake.define.CMAKE_BUILD_TYPE=Release"),
                              placeholders={}, environment={"SOURCE_DATE_EPOCH": str(epoch)}),
        toolchain=rec.ToolchainRecord(
            zig_target="aarch64-linux-gnu.2.17", identity="zig-0.17.1-x",
            versions={"zig": "0.17.1", "compiler": "clang version 22.1.8", "cmake": "3.31.6"}),
        llama_wheels=rec.ProducerRecord(version="0.1.0", stage_code_sha256="ab" * 32),
        build=rec.BuildDate(source_date_epoch=epoch, source_date_epoch_from="test", date="2025-11-24T16:00:00Z"),
    )


def package_files(libs: dict[str, bytes] | None = None, *, name: str = NAME) -> dict[str, tuple[bytes, bool]]:
    tags = name.removesuffix(".whl").split("-")[-1].split(".")  # the WHEEL file's tags are the name's
    wheel = WHEEL if name == NAME else (b"Wheel-Version: 1.0\nGenerator: scikit-build-core 1.1.2\n"
                                        b"Root-Is-Purelib: false\n" + b"".join(
                                            f"Tag: py3-none-{tag}\n".encode() for tag in tags) + b"\n")
    files: dict[str, tuple[bytes, bool]] = {
        "llama_cpp/__init__.py": (f"__version__ = '{VERSION}'\n".encode(), False),
        "llama_cpp/llama.py": (b"class Llama: ...\n", False),
        f"{DIST_INFO}/METADATA": (METADATA, False),
        f"{DIST_INFO}/WHEEL": (wheel, False),
    }
    for name, data in (libs or {}).items():
        files[f"llama_cpp/lib/{name}"] = (data, True)
    return files


def raw_wheel(path: Path, files: dict[str, tuple[bytes, bool]], *, reverse: bool = False,
              date_time: tuple[int, int, int, int, int, int] = (2024, 5, 6, 7, 8, 9), umask: int = 0o022,
              directories: bool = False) -> Path:
    """A wheel written the way a build tool might: any order, any timestamps and modes, maybe dir entries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        if directories:
            archive.writestr(zipfile.ZipInfo("llama_cpp/", date_time=date_time), b"")
        for name in sorted(files, reverse=reverse):
            data, executable = files[name]
            info = zipfile.ZipInfo(name, date_time=date_time)
            info.external_attr = (0o100000 | ((0o777 if executable else 0o666) & ~umask)) << 16
            archive.writestr(info, data)
        archive.writestr(zipfile.ZipInfo(f"{DIST_INFO}/RECORD", date_time=date_time), b"stale,,\n")
    return path


def built_wheel(directory: Path, *, index: str = "cpu", target: str = "linux-aarch64",
                libs: dict[str, bytes] | None = None, name: str = NAME, platform: str = "linux-aarch64") -> Path:
    """A finished wheel with provenance, as the pipeline publishes it."""
    directory.mkdir(parents=True, exist_ok=True)
    files = package_files(libs, name=name)
    files[f"{DIST_INFO}/llama_wheels.json"] = (
        record(target=target, index=index, platform=platform).to_json().encode(), False)
    write_wheel(directory / name, files, DIST_INFO, EPOCH)
    return directory / name


def rewritten(wheel: Path, where: Path, edits: dict[str, Callable[[bytes], bytes | None]]) -> Path:
    """A copy of ``wheel`` in ``where`` whose members ending with a key of ``edits`` are replaced by what the
    edit returns (None: left out)."""
    out = where / wheel.name
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            edit = next((f for suffix, f in edits.items() if item.filename.endswith(suffix)), None)
            data = src.read(item) if edit is None else edit(src.read(item))
            if data is not None:
                dst.writestr(item, data)
    return out


ELF_AARCH64 = b"\x7fELF\x02\x01\x01" + b"\0" * 11 + (183).to_bytes(2, "little")


def fake_wheel(where: Path, name: str, lib: bytes = ELF_AARCH64) -> Path:
    wheel = where / name
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo_pkg/__init__.py", "import pathlib\nANSWER = 42\n")
        zf.writestr("demo_pkg/lib/libdemo.so", lib)
        zf.writestr("demo_pkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: false\n")
        zf.writestr("demo_pkg-1.0.data/platlib/demo_extra.py", "EXTRA = 1\n")
    return wheel


def record_data(wheel: Path) -> dict[str, Any] | None:
    """The record inside ``wheel`` as JSON data (validated by its reader), or None when it has none."""
    found = rec.read_record(wheel)
    return None if found is None else found.to_data()
