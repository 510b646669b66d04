from __future__ import annotations

from pathlib import Path

import pytest

from llama_wheels.config import load
from llama_wheels.core.errors import ConfigError
from llama_wheels.plan import plan

from .conftest import REPO


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_repository_config_loads_with_both_pins() -> None:
    config = load(REPO)
    assert config.pin(None).version == "0.3.36"
    assert config.pin("legacy").version == "0.3.4"
    assert config.pin("current").switches["repack"] == "GGML_CPU_REPACK"
    assert config.pin("legacy").switches["repack"] == "GGML_CPU_AARCH64"
    assert config.target(None).name == "linux-aarch64"


def test_unknown_key_suggests_the_nearest(config_root: Path) -> None:
    edit(config_root / "build_config/pins.toml", "sdist_sha256 =", "sdist_sha265 =")
    with pytest.raises(ConfigError, match=r"unknown key 'sdist_sha265' \(did you mean 'sdist_sha256'\?\)"):
        load(config_root)


def test_unknown_switch_in_target(config_root: Path) -> None:
    edit(config_root / "build_config/targets.toml", "repack = true", "repak = true")
    with pytest.raises(ConfigError, match=r"targets.linux-aarch64.switches: unknown key 'repak'.*'repack'"):
        load(config_root)


def test_malformed_toml_names_the_file(config_root: Path) -> None:
    edit(config_root / "build_config/targets.toml", 'default = "linux-aarch64"', "default = ")
    with pytest.raises(ConfigError, match=r"targets.toml: malformed TOML"):
        load(config_root)


def test_bad_sha256_value_is_rejected(config_root: Path) -> None:
    edit(config_root / "build_config/pins.toml", 'sdist_sha256 = "832d', 'sdist_sha256 = "XYZ')
    with pytest.raises(ConfigError, match=r"pins.current.sdist_sha256: .* is not a lowercase hex sha256"):
        load(config_root)


def test_missing_patch_file(config_root: Path) -> None:
    (config_root / "patches/0.3.36/0003-use-extra-bufts-keyword.patch").unlink()
    with pytest.raises(ConfigError, match=r"0003-use-extra-bufts-keyword.patch not found in patches/0.3.36/"):
        load(config_root)


def test_unknown_target_and_pin() -> None:
    config = load(REPO)
    with pytest.raises(ConfigError, match=r"unknown target 'linux-arm64'.*did you mean 'linux-aarch64'"):
        plan(config, ["linux-arm64"])
    with pytest.raises(ConfigError, match=r"unknown pin 'legacyy'.*did you mean 'legacy'"):
        plan(config, [], "legacyy")


def test_default_pin_must_exist(config_root: Path) -> None:
    edit(config_root / "build_config/pins.toml", 'default = "current"', 'default = "newest"')
    with pytest.raises(ConfigError, match=r"unknown pin 'newest'"):
        load(config_root)


def test_benchmark_only_targets_are_not_published() -> None:
    config = load(REPO)
    assert config.target("linux-aarch64").publish is True
    assert config.target("linux-x86_64").publish is False
    assert config.target("linux-x86_64-haswell").publish is False
    [job] = plan(config, ["linux-x86_64-haswell"])
    assert "-DGGML_AVX2=ON" in job.cmake_args() and "-DGGML_NATIVE=OFF" in job.cmake_args()


def test_fixed_isa_targets_name_their_variant() -> None:
    config = load(REPO)
    assert config.target("linux-x86_64-zen4").variant == "zen4"
    assert config.target("linux-x86_64-zen4").publish is False
    assert config.target("linux-x86_64").variant is None
    [job] = plan(config, ["linux-x86_64-zen4"])
    assert {"-DGGML_AVX512=ON", "-DGGML_AVX512_VBMI=ON", "-DGGML_AVX512_VNNI=ON",
            "-DGGML_AVX512_BF16=ON"} <= set(job.cmake_args())


def test_a_dispatch_target_cannot_name_one_variant(config_root: Path) -> None:
    edit(config_root / "build_config/targets.toml", 'index = "cpu"\npublish = false\n',
         'index = "cpu"\npublish = false\nvariant = "haswell"\n')
    with pytest.raises(ConfigError, match=r"targets.linux-x86_64.variant: a runtime-dispatch target"):
        load(config_root)


def test_publish_must_be_a_boolean(config_root: Path) -> None:
    edit(config_root / "build_config/targets.toml", "publish = false", 'publish = "no"')
    with pytest.raises(ConfigError, match=r"targets.linux-x86_64.publish: expected bool, got str"):
        load(config_root)


def test_a_native_build_cannot_be_published(config_root: Path) -> None:
    targets = config_root / "build_config/targets.toml"
    edit(targets, "publish = false\n[targets.linux-x86_64.switches]\nnative = false",
         "[targets.linux-x86_64.switches]\nnative = true")
    with pytest.raises(ConfigError, match=r"targets.linux-x86_64: native = true .*\(set publish = false\)"):
        load(config_root)
