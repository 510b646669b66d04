"""`llama-wheels legacy-report` rendering, on made-up results (the real run is docs/legacy-0.3.4.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llama_wheels.config import load
from llama_wheels.reports import legacy
from tests.support.checkout import REPO, cli, pinned


def _cell(verdict: str, layout: str | None, detail: str = "") -> dict[str, Any]:
    return {"wheel": "w.whl", "cpu": "x", "verdict": verdict, "detail": detail, "variant": None,
            "expected_variant": None, "layout": layout, "expected_layout": None, "repacked": 0, "seconds": 1}


def fake_data() -> dict[str, Any]:
    return {
        "generated_by": "llama-wheels legacy-report",
        "wheels": {"before": {"pin": "legacy-unpatched", "target": "t", "what": "stock", "wheel": "a.whl"},
                   "after": {"pin": "legacy", "target": "t", "what": "patched", "wheel": "b.whl"}},
        "cpus": {"cortex-a53": {"description": "", "features": "armv8.0 baseline"},
                 "neoverse-n1": {"description": "", "features": "dotprod+fp16"}},
        "cells": {"before": {"cortex-a53": _cell("crash", None, "died of SIGILL"),
                             "neoverse-n1": _cell("pass", "q4_0_4x4")},
                  "after": {"cortex-a53": _cell("unsupported", None, "refused: lacks dotprod"),
                            "neoverse-n1": _cell("pass", "q4_0_4x4")}},
        "dotprod_probe": {"before": {"cortex-a53": {"ggml": True, "hwcap": False},
                                     "neoverse-n1": {"ggml": True, "hwcap": True}},
                          "after": {"cortex-a53": {"ggml": False, "hwcap": False},
                                    "neoverse-n1": {"error": "SIGILL", "ggml": None, "hwcap": None}}},
        "unused_tensor_model": {"tensor": "dec.blk.0.cross_attn_rel_b", "cpu": "neoverse-n1",
                                "result": {"before": "died of SIGSEGV while loading", "after": "loads"}},
        "matrix_seconds": 10,
    }


def test_markdown_shows_before_and_after_per_cpu() -> None:
    text = legacy.markdown(fake_data(), load(REPO))
    assert "| cortex-a53 | armv8.0 baseline | crash | - | unsupported | - |" in text
    assert "| neoverse-n1 | dotprod+fp16 | pass | q4_0_4x4 | pass | q4_0_4x4 |" in text
    assert "- before on cortex-a53: died of SIGILL" in text
    assert "| cortex-a53 | 0 | 1 | 0 |" in text  # hwcap says no, unpatched ggml says yes
    assert "| neoverse-n1 | 1 | 1 | error: SIGILL |" in text
    assert "- before: died of SIGSEGV while loading" in text and "- after: loads" in text
    for patch in load(REPO).pin("legacy").patches:
        assert f"`{patch}`" in text
    assert "do not edit" in text


def test_write_puts_both_files_in_place(tmp_path: Path) -> None:
    json_path, md_path = legacy.write(fake_data(), load(REPO), tmp_path / "docs")
    assert json.loads(json_path.read_text())["cells"]["after"]["cortex-a53"]["verdict"] == "unsupported"
    assert md_path.read_text().startswith(f"# llama-cpp-python {pinned('legacy').version}")
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["legacy-0.3.4.json", "legacy-0.3.4.md"]


def test_committed_report_is_what_the_tool_renders() -> None:
    """docs/legacy-0.3.4.md is generated from docs/legacy-0.3.4.json: no hand edits, no drift."""
    data = json.loads((REPO / "docs" / "legacy-0.3.4.json").read_text())
    assert (REPO / "docs" / "legacy-0.3.4.md").read_text() == legacy.markdown(data, load(REPO))


def test_unknown_cpu_is_refused_before_building(tmp_path: Path) -> None:
    result = cli("--log", str(tmp_path / "log"), "legacy-report", "--cpu", "cortex-a35", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "unknown CPU 'cortex-a35'" in result.stderr
    assert not list(tmp_path.glob("legacy-*"))

