from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from llama_wheels.config import load
from llama_wheels.core.errors import ConfigError
from llama_wheels.plan import plan
from tests.support.checkout import REPO, pinned


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_repository_config_loads_with_both_pins() -> None:
    config = load(REPO)
    raw = tomllib.loads((REPO / "build_config/pins.toml").read_text())
    assert config.pin(None).version == raw["pins"][raw["default"]]["version"]
    assert config.pin("legacy").version == raw["pins"]["legacy"]["version"] != config.pin(None).version
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
    version = pinned().version
    (config_root / f"patches/{version}/0003-use-extra-bufts-keyword.patch").unlink()
    with pytest.raises(ConfigError, match=rf"0003-use-extra-bufts-keyword.patch not found in patches/{version}/"):
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


def test_a_switch_table_extends_another_pins() -> None:
    config = load(REPO)
    legacy, unpatched = config.pin("legacy"), config.pin("legacy-unpatched")
    assert dict(unpatched.switches) == dict(legacy.switches)  # extends = "legacy", nothing repeated


def test_an_extending_table_overrides_its_parent(config_root: Path) -> None:
    edit(config_root / "build_config/pins.toml", 'extends = "legacy"', 'extends = "legacy"\nopenmp = false')
    config = load(config_root)
    assert config.pin("legacy-unpatched").switches["openmp"] is False
    assert config.pin("legacy").switches["openmp"] == "GGML_OPENMP"  # the parent as it was
    assert config.pin("legacy-unpatched").switches["repack"] == config.pin("legacy").switches["repack"]


@pytest.mark.parametrize(("old", "new", "message"), [
    ('extends = "legacy"', 'extends = "legasy"',
     r"pins.legacy-unpatched.switches.extends: unknown pin 'legasy' \(did you mean 'legacy'\?\)"),
    ('[pins.legacy.switches]\n', '[pins.legacy.switches]\nextends = "legacy-unpatched"\n',
     r"pins.legacy(-unpatched)?.switches.extends: legacy(-unpatched)? -> legacy(-unpatched)? -> "
     r"legacy(-unpatched)? is a cycle"),
    ('[pins.current.switches]\n', '[pins.current.switches]\nextends = "current"\n',
     r"pins.current.switches.extends: current -> current is a cycle"),
    ('extends = "legacy"', "extends = 3", r"pins.legacy-unpatched.switches.extends: expected str, got int"),
])
def test_bad_extends_is_one_line_naming_it(config_root: Path, old: str, new: str, message: str) -> None:
    edit(config_root / "build_config/pins.toml", old, new)
    with pytest.raises(ConfigError, match=message) as caught:
        load(config_root)
    assert "\n" not in str(caught.value)


def test_a_pin_names_its_own_default_targets() -> None:
    config = load(REPO)
    legacy = config.pin("legacy")
    assert legacy.targets and config.default_target not in legacy.targets
    # no target named: the pin's own targets, each of which it can build (plan() raises otherwise)
    assert [job.target.name for job in plan(config, [], "legacy")] == list(legacy.targets)
    assert [job.target.name for job in plan(config, [], None)] == [config.default_target]


@pytest.mark.parametrize(("targets", "message"), [
    ('["linux-aarch64-armv8.0", "linux-arch64"]',
     r"pins.legacy.targets: unknown target 'linux-arch64' \(did you mean 'linux-aarch64'\?\)"),
    ("[]", r"pins.legacy.targets: a non-empty list of target names"),
    ('"linux-aarch64-armv8.0"', r"pins.legacy.targets: expected list, got str"),
])
def test_bad_pin_targets(config_root: Path, targets: str, message: str) -> None:
    pins = config_root / "build_config/pins.toml"
    text = pins.read_text()
    start = text.index("targets = [", text.index("[pins.legacy]"))
    pins.write_text(text[:start] + f"targets = {targets}" + text[text.index("\n", start):])
    with pytest.raises(ConfigError, match=message):
        load(config_root)

