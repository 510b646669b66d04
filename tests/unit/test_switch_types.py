"""Switch values are typed in one place (config.SWITCH_TYPES): a target giving a switch a value of another type
is refused with the key path and the allowed values, before anything reaches CMake (`repack = "yes"` used to
become -DGGML_CPU_REPACK=yes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_wheels.config import SWITCH_TYPES, load
from llama_wheels.core.errors import ConfigError
from tests.support.checkout import REPO
from tests.support.refusal import assert_refused, run

TABLE = "[targets.linux-aarch64.switches]"


def set_switch(root: Path, key: str, value: str) -> Path:
    """targets.toml with the default target's ``key`` set to the TOML text ``value`` (replacing its line)."""
    path = root / "build_config" / "targets.toml"
    lines = path.read_text().splitlines()
    start = lines.index(TABLE) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
    body = [line for line in lines[start:end] if not line.startswith(f"{key} =")]
    path.write_text("\n".join([*lines[:start], f"{key} = {value}", *body, *lines[end:]]) + "\n")
    return path


def wrong_values(key: str) -> list[str]:
    """TOML values of the wrong type (or range) for ``key``."""
    if SWITCH_TYPES[key].kind is bool:
        return ['"yes"', '"true"', "1", '"ON"']
    return ["true", '""', "8", "[\"armv8-a\"]"]


CASES = [(key, value) for key in SWITCH_TYPES for value in wrong_values(key)]


@pytest.mark.parametrize(("key", "value"), CASES)
def test_a_wrong_value_is_refused_with_the_key_path_and_the_allowed_values(config_root: Path, key: str,
                                                                           value: str) -> None:
    set_switch(config_root, key, value)
    with pytest.raises(ConfigError) as raised:
        load(config_root)
    message = str(raised.value)
    assert f"targets.linux-aarch64.switches.{key}: " in message
    assert SWITCH_TYPES[key].allowed() in message


def test_repack_yes_through_the_command_line(config_root: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = set_switch(config_root, "repack", '"yes"')
    result = run(capsys, config_root, ["plan"], log=tmp_path / "log")
    assert_refused(result, path, says='switches.repack: "yes" is not true or false')
    assert "GGML_CPU_REPACK" not in capsys.readouterr().out


def test_every_shipped_target_has_values_of_its_switches_types() -> None:
    for target in load(REPO).targets.values():
        for key, value in target.switches.items():
            assert SWITCH_TYPES[key].accepts(value), (target.name, key, value)


def test_the_types_say_what_they_allow() -> None:
    assert SWITCH_TYPES["repack"].allowed() == "true or false"
    assert not SWITCH_TYPES["repack"].accepts("yes") and SWITCH_TYPES["repack"].accepts(False)
    assert SWITCH_TYPES["arm_arch"].accepts("armv8-a") and not SWITCH_TYPES["arm_arch"].accepts(True)
