"""The wheel's record, ``<name>.dist-info/llama_wheels.json``: its one owner.

What went into a wheel (the pin, each applied patch, the target and what its platform means, the CPU variants
it was built to hold, the exact CMake settings, the tools and their versions, the build date) as typed frozen
data: ``Record`` is written by the build (``stages.provenance.collect`` fills it, ``to_json`` gives the bytes
``stages.finalize`` puts into the wheel), and read back, validated, by every command that reads wheels
(``read_record``). ``built_as`` answers the one question the judges ask of it: what was this wheel built to be.

The JSON schema of the file is generated from these types (``json_schema``) and committed as
docs/record.schema.json; a test fails when the two drift apart. Reading is strict: a key
missing, of the wrong type or unknown is a ``RecordError`` naming the key and the wheel (exit 2), never a
``KeyError`` somewhere downstream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_wheels import oracle
from llama_wheels.binaries.wheel import open_wheel
from llama_wheels.config import SwitchValue
from llama_wheels.config.platforms import Platform
from llama_wheels.core.errors import UserError

FILENAME = "llama_wheels.json"
SCHEMA = 1
# A field with this metadata is left out of the file when it is None (and may be absent when read): keys added
# after records were first written, so older records (and their cache keys) stay what they were.
OMIT_IF_NONE = {"omit_if_none": True}


class RecordError(UserError):
    """A wheel's record is unreadable, missing a key, of a wrong type, or of an unknown schema."""


@dataclass(frozen=True, kw_only=True)
class Sdist:
    filename: str
    sha256: str


@dataclass(frozen=True, kw_only=True)
class PinRecord:
    """The pin the wheel was built from: its name in pins.toml, the release, its sdist, ggml's commit."""

    name: str
    llama_cpp_python: str
    sdist: Sdist
    llama_cpp_commit: str
    build_tag: str | None = field(default=None, metadata=OMIT_IF_NONE)  # PEP 427 build tag (pins.toml `build`)


@dataclass(frozen=True, kw_only=True)
class PatchRecord:
    name: str
    sha256: str


@dataclass(frozen=True, kw_only=True)
class TargetRecord:
    """The target: its switches, what its platform means (config/platforms.py, as data), and, for a runtime
    dispatch wheel, every CPU variant the pinned ggml declares for the platform with its features."""

    name: str
    platform: str
    index: str
    switches: Mapping[str, SwitchValue]
    platform_spec: Platform
    cpu_variants: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, kw_only=True)
class CMakeRecord:
    """What scikit-build-core got, with this machine's paths as the placeholders ``placeholders`` explains."""

    config_settings: tuple[str, ...]
    placeholders: Mapping[str, str]
    environment: Mapping[str, str]


@dataclass(frozen=True, kw_only=True)
class ToolchainRecord:
    zig_target: str | None  # None: compiled by the CI runner's own compiler (a job that needs the platform SDK)
    identity: str
    versions: Mapping[str, str]


@dataclass(frozen=True, kw_only=True)
class ProducerRecord:
    version: str  # llama-wheels'
    stage_code_sha256: str  # the code of stages/, which decides the wheel's bytes


@dataclass(frozen=True, kw_only=True)
class BuildDate:
    source_date_epoch: int
    source_date_epoch_from: str
    date: str  # the epoch as UTC, ISO 8601


@dataclass(frozen=True, kw_only=True)
class Record:
    """The record of one build. Its canonical JSON (``to_json``) is what the wheel carries, and its sha256
    (``key``) the finished-wheel cache key."""

    schema: int
    pin: PinRecord
    patches: tuple[PatchRecord, ...]
    target: TargetRecord
    cmake: CMakeRecord
    toolchain: ToolchainRecord
    llama_wheels: ProducerRecord
    build: BuildDate

    def to_data(self) -> dict[str, Any]:
        """The record as JSON data."""
        data = _encode(self)
        assert isinstance(data, dict)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_data(), indent=2, sort_keys=True) + "\n"

    @property
    def key(self) -> str:
        """sha256 of the canonical record: the finished-wheel cache key."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @property
    def job_name(self) -> str:
        """The build's name, ``TARGET@PIN`` (``BuildJob.name``)."""
        return f"{self.target.name}@{self.pin.name}"

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str) -> Record:
        """The record in ``text``, validated; ``where`` names it in errors (e.g. the wheel's file name)."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RecordError(f"{where}: {FILENAME} is not JSON ({exc}); rebuild the wheel") from None
        return cls.from_data(data, where=where)

    @classmethod
    def from_data(cls, data: object, *, where: str) -> Record:
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise RecordError(f"{where}: {FILENAME} has an unknown schema; inspect it with a newer llama-wheels")
        try:
            record = _decode(data, cls, "")
        except _Invalid as exc:
            raise RecordError(f"{where}: {FILENAME} {exc.problem}; rebuild the wheel with `llama-wheels build`"
                              ) from None
        assert isinstance(record, Record)
        return record


@dataclass(frozen=True, kw_only=True)
class BuiltAs:
    """What a wheel was built to be, from its record (not from what it happens to contain: a dispatch wheel
    that lost variant libraries must still be judged as one)."""

    target: str
    platform: str
    pin: str
    version: str  # llama-cpp-python's
    libc: str | None  # glibc | musl (Linux), None elsewhere
    dispatch: bool  # the target builds every CPU variant ggml declares (switch all_variants)
    variants: Mapping[str, frozenset[str]]  # those variants with their features ({} for any other target)
    fixed_isa: str | None  # the target's one ISA (switch arm_arch), e.g. "armv8.2-a+dotprod"
    patches: tuple[str, ...]

    @property
    def build(self) -> oracle.Build:
        """The build as the oracle judges it."""
        if self.dispatch:
            return oracle.Build(variants=tuple(self.variants))
        return oracle.Build(fixed_isa=self.fixed_isa)


def built_as(record: Record) -> BuiltAs:
    """What the wheel of ``record`` was built to be: target, pin, variants and their features, fixed ISA,
    libc, patches."""
    build = oracle.build_of(record.target.switches, record.target.cpu_variants)
    dispatch = record.target.switches.get("all_variants") is True
    return BuiltAs(target=record.target.name, platform=record.target.platform, pin=record.pin.name,
                   version=record.pin.llama_cpp_python, libc=record.target.platform_spec.libc, dispatch=dispatch,
                   variants={name: frozenset(record.target.cpu_variants[name]) for name in build.variants},
                   fixed_isa=build.fixed_isa, patches=tuple(p.name for p in record.patches))


def read_record(wheel: Path) -> Record | None:
    """The record inside ``wheel``, validated, or None when it has none (not built by llama-wheels)."""
    with open_wheel(wheel) as archive:  # missing, not a wheel, truncated or corrupt: one line naming it
        names = [n for n in archive.namelist() if n.endswith(f".dist-info/{FILENAME}") and n.count("/") == 1]
        if not names:
            return None
        text = archive.read(names[0])
    return Record.from_json(text, where=wheel.name)


def require_record(wheel: Path, purpose: str) -> Record:
    """The record inside ``wheel``; a RecordError saying what needs it (``purpose``) when it has none."""
    record = read_record(wheel)
    if record is None:
        raise RecordError(f"{wheel.name}: no {FILENAME} record, so nothing says {purpose}; pass a wheel that "
                          "`llama-wheels build` wrote")
    return record


# --- the typed codec and the schema, both from the dataclasses above ---------------------------------------


class _Invalid(Exception):
    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _omittable(f: dataclasses.Field[Any]) -> bool:
    return bool(f.metadata.get("omit_if_none"))


def _encode(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (_omittable(f) and getattr(value, f.name) is None)}
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    return value


def _name(tp: object) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list"
    if origin is Mapping or (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
        return "an object"
    names: dict[object, str] = {str: "a string", int: "an integer", bool: "true or false", type(None): "null"}
    return names.get(tp, str(tp))


def _decode(value: object, tp: Any, path: str) -> Any:
    """``value`` (JSON data at ``path``) as type ``tp``, or _Invalid naming the key."""
    where = path or "the top level"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _decode(value, option, path)
            except _Invalid:
                continue
        raise _Invalid(f"key {where}: {value!r} is not {_name(tp)}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Invalid(f"key {where}: not an object")
        hints, fields = _hints(tp), {f.name: f for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise _Invalid(f"key {path + '.' if path else ''}{unknown[0]}: unknown")
        out = {}
        for name, f in fields.items():
            key = f"{path}.{name}" if path else name
            if name not in value:
                if _omittable(f):
                    continue
                raise _Invalid(f"lacks key {key}")
            out[name] = _decode(value[name], hints[name], key)
        return tp(**out)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list):
            raise _Invalid(f"key {where}: {value!r} is not a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _Invalid(f"key {where}: {value!r} is not a list of {len(args)}")
        return tuple(_decode(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is Mapping:
        _, value_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise _Invalid(f"key {where}: not an object")
        return {k: _decode(v, value_type, f"{path}.{k}") for k, v in value.items()}
    if tp is type(None):
        if value is not None:
            raise _Invalid(f"key {where}: {value!r} is not null")
        return None
    if tp in (str, bool) or tp is int:
        if type(value) is not tp:  # bool is no int here, nor int a bool
            raise _Invalid(f"key {where}: {value!r} is not {_name(tp)}")
        return value
    raise TypeError(f"record type {tp!r} has no JSON form")  # a programming error in the types above


def _schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema(a) for a in typing.get_args(tp)]}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints, fields = _hints(tp), dataclasses.fields(tp)
        out: dict[str, Any] = {"type": "object", "additionalProperties": False,
                               "properties": {f.name: _schema(hints[f.name]) for f in fields},
                               "required": [f.name for f in fields if not _omittable(f)]}
        if tp.__doc__ and not tp.__doc__.startswith(tp.__name__ + "("):
            out["description"] = " ".join(tp.__doc__.split())
        return out
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema(args[0])}
        return {"type": "array", "prefixItems": [_schema(a) for a in args], "minItems": len(args),
                "maxItems": len(args)}
    if origin is Mapping:
        return {"type": "object", "additionalProperties": _schema(typing.get_args(tp)[1])}
    names = {str: "string", int: "integer", bool: "boolean", type(None): "null"}
    if tp in names:
        return {"type": names[tp]}
    raise TypeError(f"record type {tp!r} has no JSON form")


def json_schema() -> dict[str, Any]:
    """The JSON schema (2020-12) of ``llama_wheels.json``, generated from ``Record``."""
    schema = _schema(Record)
    schema["properties"]["schema"] = {"const": SCHEMA}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": FILENAME, **schema}


def schema_text() -> str:
    """The committed docs/record.schema.json: ``python -m llama_wheels.binaries.record > docs/record.schema.json``
    (tests/unit/test_record.py fails when they differ)."""
    return json.dumps(json_schema(), indent=2) + "\n"


if __name__ == "__main__":
    print(schema_text(), end="")
