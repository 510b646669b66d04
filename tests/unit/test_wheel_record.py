"""The wheel's record (binaries/record.py): its JSON schema is generated from the type and committed (drift-
tested), its bytes are the writer's, and every command that reads wheels refuses a record with a key missing or
of the wrong type in one line naming the key and the wheel, exit 2."""

from __future__ import annotations

import dataclasses
import io
import json
import typing
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from llama_wheels import cli
from llama_wheels.binaries.record import Record, RecordError, built_as, json_schema, read_record, schema_text
from tests.support.checkout import REPO
from tests.support.wheelfactory import DIST_INFO, EPOCH, NAME, built_wheel, package_files, raw_wheel, record

SCHEMA_FILE = REPO / "docs" / "record.schema.json"


def test_the_committed_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.read_text() == schema_text(), (
        "docs/record.schema.json is stale: python -m llama_wheels.binaries.record > docs/record.schema.json")


def test_the_schema_accepts_a_record_and_refuses_a_broken_one() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    data = record().to_data()
    validator.validate(data)
    del data["target"]["cpu_variants"]
    with pytest.raises(jsonschema.ValidationError, match="'cpu_variants' is a required property"):
        validator.validate(data)


def test_the_record_reads_back_to_the_same_bytes() -> None:
    text = record().to_json()
    assert Record.from_json(text, where="w").to_json() == text
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"  # the canonical form


def test_a_build_tag_is_written_only_when_the_pin_has_one() -> None:
    plain = record()
    assert "build_tag" not in plain.to_data()["pin"]
    tagged = dataclasses.replace(plain, pin=dataclasses.replace(plain.pin, build_tag="2"))
    assert tagged.to_data()["pin"]["build_tag"] == "2"
    assert Record.from_json(tagged.to_json(), where="w") == tagged


def test_built_as_answers_what_the_wheel_was_built_to_be() -> None:
    base = record()
    dispatch = dataclasses.replace(base, target=dataclasses.replace(
        base.target, switches={"all_variants": True}, cpu_variants={"armv8.2_1": ("dotprod",), "armv8.0_1": ()}))
    built = built_as(dispatch)
    assert (built.target, built.platform, built.libc, built.dispatch) == ("linux-aarch64", "linux-aarch64", "glibc",
                                                                          True)
    assert built.variants == {"armv8.2_1": frozenset({"dotprod"}), "armv8.0_1": frozenset()}
    assert built.build.variants == ("armv8.2_1", "armv8.0_1") and built.patches == (base.patches[0].name,)
    fixed = built_as(dataclasses.replace(base, target=dataclasses.replace(
        base.target, switches={"arm_arch": "armv8.2-a+dotprod"}, cpu_variants={"ignored": ("x",)})))
    assert (fixed.dispatch, fixed.variants, fixed.fixed_isa) == (False, {}, "armv8.2-a+dotprod")
    assert fixed.build.fixed_isa == "armv8.2-a+dotprod"


def required_keys(cls: type = Record, prefix: str = "") -> Iterator[str]:
    """Every key the writer always writes, dotted (``patches[0].name``: the factory record has one patch)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("omit_if_none"):
            continue
        key = f"{prefix}{f.name}"
        yield key
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from required_keys(tp, key + ".")
        elif typing.get_origin(tp) is tuple and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            yield from required_keys(typing.get_args(tp)[0], key + "[0].")


def edited(data: dict[str, Any], key: str, value: object = None, *, remove: bool = False) -> dict[str, Any]:
    data = json.loads(json.dumps(data))
    *parents, last = key.replace("[0]", ".0").split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if remove:
        del node[last]
    else:
        node[last] = value
    return data


def wheel_with_record(directory: Path, data: dict[str, Any]) -> Path:
    files = package_files()
    files[f"{DIST_INFO}/llama_wheels.json"] = (json.dumps(data, indent=2, sort_keys=True).encode(), False)
    return raw_wheel(directory / NAME, files)


def run(*args: str) -> tuple[int, str]:
    """The command line in this process: its exit code and its stderr without the log's progress lines."""
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = cli.main(list(args))
    return code, "".join(line for line in err.getvalue().splitlines(keepends=True) if " full log: " not in line)


def commands(wheel: Path, tmp: Path) -> dict[str, tuple[str, ...]]:
    """Every command that reads a wheel's record, on ``wheel``."""
    log = ("--config", str(REPO), "--log", str(tmp / "cmd.log"))
    return {"inspect": (*log, "inspect", str(wheel)), "audit": (*log, "audit", str(wheel)),
            "index": (*log, "index", str(wheel.parent), str(tmp / "site")),
            "test": (*log, "test", str(wheel), "--cpu", "cortex-a53", "--out", str(tmp / "report"))}


KEYS = list(required_keys())


def test_the_required_keys_are_the_writers() -> None:
    assert {"schema", "pin.sdist.sha256", "patches[0].name", "target.cpu_variants", "target.platform_spec.libc",
            "toolchain.zig_target", "build.source_date_epoch"} <= set(KEYS)
    assert "pin.build_tag" not in KEYS
    for key in KEYS:  # and the reader's: each one's absence is refused
        with pytest.raises(RecordError):
            Record.from_data(edited(record().to_data(), key, remove=True), where="w")


@pytest.mark.parametrize("key", [k for k in KEYS if k != "schema"])
def test_every_command_refuses_a_record_without_a_key_in_one_line(tmp_path: Path, key: str) -> None:
    wheel = wheel_with_record(tmp_path / "dist", edited(record().to_data(), key, remove=True))
    for name, args in commands(wheel, tmp_path).items():
        code, err = run(*args)
        lines = err.splitlines()
        assert code == 2 and len(lines) == 1, (name, code, err)
        assert f"{NAME}: llama_wheels.json lacks key {key};" in lines[0], (name, lines[0])


@pytest.mark.parametrize(("key", "value", "says"), [
    ("schema", 2, "unknown schema"),
    ("target.index", 7, "key target.index: 7 is not a string"),
    ("build.source_date_epoch", "1764000000", "key build.source_date_epoch: '1764000000' is not an integer"),
    ("target.switches.repack", 1, "key target.switches.repack: 1 is not true or false or a string"),
    ("target.cpu_variants", ["armv8.0_1"], "key target.cpu_variants: not an object"),
    ("pin.sdist", "x.tar.gz", "key pin.sdist: not an object"),
    ("target.surprise", True, "key target.surprise: unknown"),
])
def test_every_command_refuses_a_mistyped_record_in_one_line(tmp_path: Path, key: str, value: object,
                                                             says: str) -> None:
    wheel = wheel_with_record(tmp_path / "dist", edited(record().to_data(), key, value))
    for name, args in commands(wheel, tmp_path).items():
        code, err = run(*args)
        assert code == 2 and len(err.splitlines()) == 1 and says in err and NAME in err, (name, code, err)


def test_a_wheel_without_a_record_reads_as_none_and_a_good_one_as_its_record(tmp_path: Path) -> None:
    assert read_record(raw_wheel(tmp_path / "foreign" / NAME, package_files())) is None
    assert read_record(built_wheel(tmp_path / "ours")) == record()
    assert record().build.source_date_epoch == EPOCH
