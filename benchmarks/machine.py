"""Where a benchmark ran: CPU model and flags, cores, load, kernel, Python, and the commit measured."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from llama_wheels.core import runner

# The flags that decide which ggml CPU variant and which repack layout a CPU gets (x86 and ARM spellings).
RELEVANT_FLAGS = (
    "sse4_2",
    "avx",
    "f16c",
    "fma",
    "avx2",
    "bmi2",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512vbmi",
    "amx_int8",
    "asimddp",
    "i8mm",
    "sve",
    "sve2",
    "sme",
)


def cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (Linux), as key -> value."""
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def commit(root: Path) -> tuple[str, bool]:
    """HEAD of the checkout and whether the work tree differs from it."""
    head = runner.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture=True).strip()
    status = runner.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture=True
    )
    return head, bool(status.strip())


def report_header(head: str, dirty: bool, smoke: bool) -> dict[str, Any]:
    """The first keys of every benchmark report: schema, when, which commit (``commit``), smoke or not."""
    return {
        "schema": 1,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": head,
        "dirty": dirty,
        "smoke": smoke,
    }


def machine() -> dict[str, Any]:
    info = cpuinfo()
    flags = (info.get("flags") or info.get("Features") or "").split()
    return {
        "cpu_model": info.get("model name") or info.get("CPU part") or platform.processor() or "unknown",
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "flags": sorted(f for f in flags if f in RELEVANT_FLAGS),
        "all_flags": " ".join(flags),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "loadavg": list(os.getloadavg()),
    }
