"""Reading build_config/*.toml: a file parsed once, tables that know where they came from, and the
"did you mean" suggestion every unknown name gets."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from llama_wheels.core.errors import ConfigError

T = TypeVar("T")
_KNOWN_SHOWN = 8  # names a suggestion lists when none is close


def suggest(name: str, candidates: Mapping[str, Any] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    known = sorted(candidates)
    if len(known) > _KNOWN_SHOWN:  # one line stays short: the first few, and how many there are
        return f" (known: {', '.join(known[:_KNOWN_SHOWN])} and {len(known) - _KNOWN_SHOWN} more)"
    return f" (known: {', '.join(known)})" if known else ""


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing; run from the llama-wheels checkout or pass --config") from None
    except OSError as exc:  # a directory where the file belongs, an unreadable file
        raise ConfigError(f"{path}: cannot read it ({exc.strerror}); it must be a readable TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None


class Table:
    """Reads one TOML table, remembering where it came from so errors can say so."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.where = where

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in allowed:
                raise ConfigError(f"{self.where}: unknown key {key!r}{suggest(key, allowed)}")

    def get(self, key: str, kind: type[T], default: T | None = None) -> T:
        if key not in self.data:
            if default is None:
                raise ConfigError(f"{self.where}: missing required key {key!r}")
            return default
        value = self.data[key]
        if not isinstance(value, kind):
            raise ConfigError(f"{self.where}.{key}: expected {kind.__name__}, got {type(value).__name__}")
        return value

    def match(self, key: str, pattern: re.Pattern[str], what: str) -> str:
        value = self.get(key, str)
        if not pattern.match(value):
            raise ConfigError(f"{self.where}.{key}: {value!r} is not {what}")
        return value
