"""Wheel file names (packaging.utils) and a wheel's CPU libraries, read by binaries/wheel.py for every module."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from llama_wheels.binaries.wheel import CPU_ISA, cpu_variants, fixed_isa, parse_wheel_name, variant_of
from llama_wheels.config.platforms import platform
from llama_wheels.core.errors import RepairError, UserError
from llama_wheels.release.index import build_index, read_wheel
from llama_wheels.stages.repair import check_wheel
from tests.support.wheelfactory import NAME, VERSION, built_wheel


def test_parse_wheel_name() -> None:
    parsed = parse_wheel_name(NAME)
    assert parsed is not None
    assert (parsed.project, str(parsed.version), parsed.build) == ("llama-cpp-python", VERSION, ())
    assert parsed.platforms == {"manylinux_2_17_aarch64", "manylinux2014_aarch64"}
    assert {str(t) for t in parsed.tags} == {"py3-none-manylinux_2_17_aarch64", "py3-none-manylinux2014_aarch64"}
    tagged = parse_wheel_name("Demo.Pkg-1.0-1abc-py2.py3-none-any.whl")  # a build tag, compressed tags
    assert tagged is not None
    assert (tagged.project, tagged.build, tagged.platforms) == ("demo-pkg", (1, "abc"), {"any"})
    assert len(tagged.tags) == 2


@pytest.mark.parametrize("name", [
    "demo_pkg-1.0.tar.gz",  # not a wheel
    "demo_pkg-1.0-py3-none.whl",  # a part missing
    "demo_pkg-1.0-py3-none-any-extra-more.whl",  # a part too many
    "demo_pkg-not!a!version-py3-none-any.whl",
    "demo_pkg-1.0-x1-py3-none-any.whl",  # a build tag must start with a digit
])
def test_what_is_not_a_wheel_name(name: str) -> None:
    assert parse_wheel_name(name) is None


def test_cpu_variants_are_the_libraries_in_llama_cpp_lib() -> None:
    names = ["llama_cpp/lib/libggml-cpu-armv8.0_1.so", "llama_cpp/lib/libggml-cpu-armv8.2_2.so",
             "llama_cpp/lib/libggml-cpu-apple_m1.dylib",
             "llama_cpp/lib/libggml-cpu.so",  # the one library of a fixed-ISA build: no variant
             "llama_cpp/lib/libggml-cpu-x.so.txt", "elsewhere/libggml-cpu-zen4.so",
             "llama_cpp/lib/sub/libggml-cpu-zen5.so", "llama_cpp/lib/libllama.so"]
    assert cpu_variants(names) == ["apple_m1", "armv8.0_1", "armv8.2_2"]
    assert variant_of("llama_cpp/lib/libggml-cpu-armv8.2_2.so") == "armv8.2_2"
    assert variant_of("llama_cpp/lib/libggml-base.so") is None


def _archive(tmp_path: Path, files: dict[str, str]) -> zipfile.ZipFile:
    path = tmp_path / "w.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return zipfile.ZipFile(path)


def test_fixed_isa(tmp_path: Path) -> None:
    with _archive(tmp_path, {CPU_ISA: "armv8.2-a+dotprod\n"}) as archive:
        assert fixed_isa(archive) == "armv8.2-a+dotprod"
    with _archive(tmp_path, {CPU_ISA: " \n"}) as archive:
        assert fixed_isa(archive) is None
    with _archive(tmp_path, {"llama_cpp/cpu-isa.txt": "armv8-a"}) as archive:  # not where the build puts it
        assert fixed_isa(archive) is None


def test_the_index_refuses_a_file_that_is_not_named_as_a_wheel(tmp_path: Path) -> None:
    built_wheel(tmp_path / "dist", name=f"llama_cpp_python-{VERSION}-py3-none.whl")
    with pytest.raises(UserError, match=rf"llama_cpp_python-{re.escape(VERSION)}-py3-none\.whl: not a wheel file name"):
        build_index(tmp_path / "dist", tmp_path / "site")


def test_the_index_refuses_a_file_name_its_metadata_contradicts(tmp_path: Path) -> None:
    for name in (f"llama_cpp_python-{VERSION}.post1-py3-none-any.whl", f"other-{VERSION}-py3-none-any.whl"):
        wheel = built_wheel(tmp_path / name, name=name)
        with pytest.raises(UserError, match="file name does not match its METADATA"):
            read_wheel(wheel)
    # the same name, spelled another way, with a build tag: one project, one version
    same = read_wheel(built_wheel(tmp_path / "b", name=f"Llama.CPP_python-{VERSION}-1-py3-none-any.whl"))
    assert (same.project, same.version) == ("llama-cpp-python", VERSION)


def test_repair_checks_the_platform_tag_of_the_name(tmp_path: Path) -> None:
    for name in (NAME.replace("aarch64", "x86_64"), f"llama_cpp_python-{VERSION}.whl"):
        wheel = built_wheel(tmp_path / name, name=name)
        with pytest.raises(RepairError, match="tag is not manylinux_2_17_aarch64"):
            check_wheel(wheel, platform("linux-aarch64"))

