"""The guest protocol: a script run in another Python (under qemu, or a wheel's own environment) reports by
printing one line ``TAG <json>`` (``report_line``); the host scans the output for the tag and parses the JSON
(``reported``). Other output (ggml's logs, warnings) may come before and after it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def report_line(tag: str, value: object) -> str:
    """The line a guest prints to report ``value`` under ``tag`` (what ``reported`` reads back). Guest scripts
    that cannot import this module spell it ``print("TAG " + json.dumps(value))``."""
    return f"{tag} {json.dumps(value)}"


def reported(lines: Iterable[str], tag: str) -> list[Any]:
    """The JSON value of every ``TAG <json>`` line in ``lines``, in order; empty when the guest never reported
    (it died, or failed before it could). The last one is the answer."""
    prefix = tag + " "
    return [json.loads(line[len(prefix):]) for line in lines if line.startswith(prefix)]
