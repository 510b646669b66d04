"""Bad input, one at a time, as a new user would give it (the defects review 2026-12b §3 found): each command
refuses with exit 2, one short line naming the user's path and the fix, no traceback, nothing written."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from llama_wheels import cli
from llama_wheels.gguf_tools import convert
from llama_wheels.standalone import models
from tests.support.checkout import REPO
from tests.support.refusal import Refusal, assert_refused, run
from tests.support.wheelfactory import DIST_INFO, NAME, built_wheel


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    return built_wheel(tmp_path / "dist")


def old_model(directory: Path) -> Path:
    """A real GGUF with the Q4_0_4_4 tensors an old llama.cpp wrote (what convert-model reads)."""
    q4 = models.write_model(models.SPECS["q4_0-odd-rows"], directory / "q4_0.gguf")
    convert.to_old_format(q4, directory / "old.gguf", next(iter(convert.OLD_TYPES.values())))
    return directory / "old.gguf"


def plan_after_editing_pins(root: Path, old: str, new: str, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> tuple[Refusal, Path]:
    """`plan` on a copy of build_config/ whose pins.toml has ``old`` replaced by ``new`` (once)."""
    pins = root / "build_config" / "pins.toml"
    pins.write_text(pins.read_text().replace(old, new, 1))
    return run(capsys, root, ["plan"], log=tmp_path / "log"), pins


def damaged_copy(wheel: Path, data: bytes | bytearray, tmp_path: Path) -> Path:
    """``data`` written as a wheel of ``wheel``'s name in a directory of its own."""
    bad = tmp_path / "bad" / wheel.name
    bad.parent.mkdir()
    bad.write_bytes(bytes(data))
    return bad


def truncated(wheel: Path, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    data = wheel.read_bytes()
    (where / wheel.name).write_bytes(data[: len(data) // 2])
    return where / wheel.name


# Every command that reads a user's wheel, with the arguments around it (OUT: the output location).
WHEEL_COMMANDS = {
    "inspect": lambda whl, out: ["inspect", str(whl)],
    "audit": lambda whl, out: ["audit", str(whl)],
    "test": lambda whl, out: ["test", str(whl), "--out", str(out)],
    "repair": lambda whl, out: ["repair", str(whl), "--dist", str(out)],
    "index": lambda whl, out: ["index", str(whl.parent), str(out)],
}


@pytest.mark.parametrize("command", sorted(WHEEL_COMMANDS))
def test_a_truncated_wheel(command: str, wheel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = truncated(wheel, tmp_path / "cut")
    result = run(capsys, REPO, WHEEL_COMMANDS[command](bad, tmp_path / "out"), log=tmp_path / "log",
                 watch=tmp_path / "out")
    assert_refused(result, bad, says="corrupt")


@pytest.mark.parametrize("command", sorted(WHEEL_COMMANDS))
def test_a_missing_wheel_is_no_such_file(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "gone" / NAME
    argv = WHEEL_COMMANDS[command](missing, tmp_path / "out")
    result = run(capsys, REPO, argv, log=tmp_path / "log", watch=tmp_path / "out")
    assert_refused(result, missing.parent if command == "index" else missing, says="no such")


def test_a_corrupt_local_header_is_one_short_line(wheel: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The first member's name in its local header overwritten with binary bytes: zipfile's message quotes
    them raw."""
    data = bytearray(wheel.read_bytes())
    with zipfile.ZipFile(wheel) as archive:
        first = archive.infolist()[0]
    start = first.header_offset + 30
    data[start:start + len(first.filename)] = bytes(range(128, 128 + len(first.filename)))
    bad = damaged_copy(wheel, data, tmp_path)
    for command in ("audit", "inspect"):
        assert_refused(run(capsys, REPO, [command, str(bad)], log=tmp_path / "log"), bad, says="corrupt")


def test_inspect_of_a_wheel_without_its_wheel_file(wheel: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad" / wheel.name
    bad.parent.mkdir()
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            if info.filename != f"{DIST_INFO}/WHEEL":
                dst.writestr(info, src.read(info))
    assert_refused(run(capsys, REPO, ["inspect", str(bad)], log=tmp_path / "log"), bad, says="WHEEL")


@pytest.mark.parametrize("option", [("--jobs", "-1"), ("--jobs", "0"), ("--jobs", "two"),
                                    ("--cell-timeout", "-5")])
def test_test_refuses_a_count_below_one_before_any_work(option: tuple[str, str], wheel: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, REPO, ["test", str(wheel), *option], log=tmp_path / "log")
    assert_refused(result, option[0])


def test_repair_of_a_corrupt_wheel_is_ours_not_auditwheels(wheel: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    bad = truncated(wheel, tmp_path / "cut")
    result = run(capsys, REPO, ["repair", str(bad), "--dist", str(tmp_path / "out")], log=tmp_path / "log",
                 watch=tmp_path / "out")
    assert_refused(result, bad)
    assert "auditwheel" not in result.line


def test_repair_of_a_wheel_without_libraries_is_ours_not_auditwheels(wheel: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, REPO, ["repair", str(wheel), "--dist", str(tmp_path / "out")], log=tmp_path / "log",
                 watch=tmp_path / "out")
    assert_refused(result, wheel, says="no shared library")
    assert "auditwheel" not in result.line


def test_a_default_pin_that_names_nothing_names_the_default_key(config_root: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    result, pins = plan_after_editing_pins(config_root, 'default = "current"', 'default = "currnet"', tmp_path, capsys)
    assert_refused(result, pins, says="default = 'currnet'")
    assert "'current'" in result.line  # the suggestion


def test_debug_keeps_the_exit_code(wheel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a wheel the command itself refuses (a missing path is refused by the parser, before any code of ours runs)
    broken = truncated(wheel, tmp_path)
    plain = run(capsys, REPO, ["inspect", str(broken)], log=tmp_path / "log")
    result = run(capsys, REPO, ["--debug", "inspect", str(broken)], log=tmp_path / "log")
    assert result.code == plain.code == 2
    assert "Traceback" in result.stderr and "Traceback" not in plain.stderr
    assert str(broken) in result.line and result.line == plain.line


def test_convert_model_into_a_directory_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = old_model(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    result = run(capsys, REPO, ["convert-model", str(model), str(out)], log=tmp_path / "log", watch=out)
    assert_refused(result, out, says="directory")


def test_an_index_where_nothing_can_be_written_names_the_users_path(wheel: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = Path("/proc/llama-wheels-index")
    result = run(capsys, REPO, ["index", str(wheel.parent), str(out)], log=tmp_path / "log")
    assert_refused(result, out, code=1)


def test_an_index_whose_dist_is_a_file(wheel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, REPO, ["index", str(wheel), str(tmp_path / "out")], log=tmp_path / "log",
                 watch=tmp_path / "out")
    assert_refused(result, wheel)


def test_plan_with_a_config_dir_that_is_not_there(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, tmp_path / "nowhere", ["plan"], log=tmp_path / "log")
    assert_refused(result, tmp_path / "nowhere", says="missing")


def test_an_internal_error_is_one_line_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A bug of ours (here a KeyError planted in `plan`) is one line with exit 1 that says to rerun with --debug."""
    def broken(*args: object) -> str:
        raise KeyError("planted")
    monkeypatch.setattr(cli, "describe", broken)
    result = run(capsys, REPO, ["plan"], log=tmp_path / "log")
    assert_refused(result, "KeyError", code=1, says="--debug")


def test_a_flip_that_sends_zipfile_seeking_before_the_start(wheel: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Found by the long fuzz search: a flipped offset byte of the central directory ended in an OSError
    (EINVAL, no file name) and 'a file operation: Invalid argument', exit 1."""
    data = bytearray(wheel.read_bytes())
    data[data.rindex(b"PK\x05\x06") + 16] ^= 1  # the end record's offset of the central directory, one bit off
    bad = damaged_copy(wheel, data, tmp_path)
    assert_refused(run(capsys, REPO, ["inspect", str(bad)], log=tmp_path / "log"), bad, says="corrupt")


def test_an_unknown_key_with_no_close_name_lists_a_few(config_root: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Found by the long fuzz search: every one of 23 switch names made the line too long to read."""
    result, pins = plan_after_editing_pins(config_root, "[pins.current.switches]\n", "[pins.current.switches]\nq = 1\n",
                                           tmp_path, capsys)
    assert_refused(result, pins, says="unknown key 'q' (known: accelerate, ")
    assert " more)" in result.line


def test_a_switch_a_pin_lacks_names_the_file_that_says_so(config_root: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Found by the long fuzz search: `repack = false` in a pin's switches made plan blame 'the pin' without
    naming the file where that is written."""
    result, _ = plan_after_editing_pins(config_root, 'repack = "GGML_CPU_REPACK"', "repack = false", tmp_path, capsys)
    assert_refused(result, "build_config/pins.toml", says="switches.repack = false")


def test_a_member_flagged_encrypted(wheel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by the long fuzz search: one flipped bit (a member's 'encrypted' flag) made zipfile raise
    RuntimeError, an internal error with exit 1."""
    data = bytearray(wheel.read_bytes())
    directory = data.index(b"PK\x01\x02")
    data[directory + 8] |= 1  # general purpose flag, bit 0: encrypted
    bad = damaged_copy(wheel, data, tmp_path)
    assert_refused(run(capsys, REPO, ["inspect", str(bad)], log=tmp_path / "log"), bad, says="encrypted")


def test_a_member_of_an_unknown_compression_method(wheel: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Found by the long fuzz search: a flipped bit of a member's compression method made zipfile raise
    NotImplementedError, an internal error with exit 1."""
    data = bytearray(wheel.read_bytes())
    directory = data.index(b"PK\x01\x02")
    data[directory + 10] = 99  # compression method: none zipfile knows
    bad = damaged_copy(wheel, data, tmp_path)
    assert_refused(run(capsys, REPO, ["inspect", str(bad)], log=tmp_path / "log"), bad, says="corrupt")
