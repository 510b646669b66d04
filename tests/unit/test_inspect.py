"""``llama-wheels inspect``: tags, libraries, CPU variants, GLIBC floor (ELF) and minos (Mach-O)."""

from __future__ import annotations

import struct
from pathlib import Path

from llama_wheels.binaries.macho import macho_facts
from llama_wheels.release.inspection import inspect, render
from tests.support.wheelfactory import VERSION, built_wheel


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 8)


def macho(minos: tuple[int, int, int] = (11, 0, 0)) -> bytes:
    """A minimal arm64 Mach-O dylib: LC_BUILD_VERSION, two LC_LOAD_DYLIB, one LC_RPATH."""
    packed = (minos[0] << 16) | (minos[1] << 8) | minos[2]
    commands = [struct.pack("<IIIIII", 0x32, 24, 1, packed, 0x000F0000, 0)]
    for name in (b"@rpath/libggml-base.dylib", b"/usr/lib/libSystem.B.dylib"):
        body = _pad(name + b"\0")
        commands.append(struct.pack("<IIIIII", 0xC, 24 + len(body), 24, 2, 0x10000, 0x10000) + body)
    body = _pad(b"@loader_path\0")
    commands.append(struct.pack("<III", 0x8000001C, 12 + len(body), 12) + body)
    load = b"".join(commands)
    header = struct.pack("<IiiIIIII", 0xFEEDFACF, 0x0100000C, 0, 6, len(commands), len(load), 0, 0)
    return header + load


def test_macho_facts() -> None:
    facts = macho_facts("libx.dylib", macho((11, 0, 0)))
    assert facts.archs == ("ARM64",)
    assert facts.minos == ("11.0",)
    assert facts.dylibs == ("@rpath/libggml-base.dylib", "/usr/lib/libSystem.B.dylib")
    assert facts.rpaths == ("@loader_path",)
    assert macho_facts("libx.dylib", macho((14, 2, 1))).minos == ("14.2.1",)
    assert macho_facts("libx.dylib", macho((12, 3, 10))).minos == ("12.3.10",)  # not 12.3.1


def test_inspect_a_linux_wheel(tmp_path: Path) -> None:
    elf = Path("/lib/x86_64-linux-gnu/libz.so.1").resolve().read_bytes()  # any real ELF with GLIBC versions
    wheel = built_wheel(tmp_path, libs={"libggml-cpu-armv8.0_1.so": elf, "libggml-cpu-armv8.2_2.so": elf})
    facts = inspect(wheel)
    assert facts["tags"] == ["py3-none-manylinux_2_17_aarch64", "py3-none-manylinux2014_aarch64"]
    assert facts["cpu_variants"] == ["armv8.0_1", "armv8.2_2"]
    assert facts["requires_glibc"] and facts["macos_minos"] is None
    assert [lib["format"] for lib in facts["libraries"]] == ["ELF", "ELF"]
    assert facts["provenance"]["target"]["index"] == "cpu"
    text = render(facts)
    assert "cpu       runtime dispatch over armv8.0_1, armv8.2_2" in text
    assert f"requires  GLIBC >= {facts['requires_glibc']}" in text
    assert "  patch      0001-install-only-the-package.patch sha256 " in text
    assert "  date       2025-11-24T16:00:00Z (SOURCE_DATE_EPOCH 1764000000, from test)" in text


def test_inspect_a_macos_wheel(tmp_path: Path) -> None:
    libs = {"libggml-base.dylib": macho((11, 0, 0)), "libllama.dylib": macho((12, 3, 0))}
    wheel = built_wheel(tmp_path, libs=libs,
                        name=f"llama_cpp_python-{VERSION}-py3-none-macosx_11_0_arm64.whl")
    facts = inspect(wheel)
    assert facts["macos_minos"] == "12.3" and facts["requires_glibc"] is None
    assert "requires  macOS >= 12.3 (highest minos of any library)" in render(facts)
    links = "links @rpath/libggml-base.dylib, /usr/lib/libSystem.B.dylib; rpath @loader_path"
    assert f"arm64, minos 11.0; {links}" in render(facts)
    assert facts["libraries"][0] == {
        "path": "llama_cpp/lib/libggml-base.dylib", "format": "Mach-O", "arch": "arm64", "minos": "11.0",
        "dylibs": ["@rpath/libggml-base.dylib", "/usr/lib/libSystem.B.dylib"], "rpaths": ["@loader_path"]}


def test_inspect_reports_what_is_neither_elf_nor_a_readable_macho(tmp_path: Path) -> None:
    broken = macho()[:40]  # a Mach-O header whose load commands are cut off
    libs = {"libggml-base.dylib": broken, "libllama.dylib": b"not a library", "libggml.dylib": macho()}
    wheel = built_wheel(tmp_path, libs=libs, name=f"llama_cpp_python-{VERSION}-py3-none-macosx_11_0_arm64.whl")
    facts = inspect(wheel)
    assert [(lib["path"].rsplit("/")[-1], lib["format"]) for lib in facts["libraries"]] == [
        ("libggml-base.dylib", "unknown"), ("libggml.dylib", "Mach-O"), ("libllama.dylib", "unknown")]
    assert "libllama.dylib               not ELF or Mach-O" in render(facts)

