"""The repack report (docs/repack-<version>.*, README's table): generated from the measured data, never edited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_wheels import oracle
from llama_wheels.config import load
from llama_wheels.core.errors import UserError
from llama_wheels.reports import repack_report
from tests.support.checkout import REPO


def committed() -> dict[str, object]:
    version = load(REPO).pin("current").version
    data: dict[str, object] = json.loads((REPO / "docs" / f"repack-{version}.json").read_text())
    return data


def test_the_committed_report_is_what_its_data_generates() -> None:
    data = committed()
    assert (REPO / "docs" / f"repack-{data['version']}.md").read_text() == repack_report.markdown(data)
    readme = (REPO / "README.md").read_text()
    assert repack_report.with_readme_block(readme, data) == readme, "README's repack table is stale or edited"


def test_the_report_covers_every_arm_type_and_cpu_class_and_passed() -> None:
    from llama_wheels.config.cpus import load_cpus

    data = committed()
    assert data["types"] == list(repack_report.arm_types())
    assert set(repack_report.arm_types()) >= {"Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "MXFP4"}
    assert list(data["cpus"]) == list(load_cpus(REPO))  # type: ignore[call-overload]
    for role, cells in data["cells"].items():  # type: ignore[attr-defined]
        assert {cpu: c["verdict"] for cpu, c in cells.items()} == dict.fromkeys(data["cpus"], "pass"), role
        tokens = {json.dumps(c["tokens"], sort_keys=True) for c in cells.values()}
        assert len(tokens) == 1, f"{role}: greedy tokens differ between CPU classes"


def test_what_the_ninth_variant_buys_is_derived_from_the_cells() -> None:
    data = committed()
    lines = repack_report.markdown(data)
    if "max-nosve" in data["cpus"]:  # type: ignore[operator]
        assert "- **max-nosve**: variant armv8.2_2 -> armv8.6_nosve; " in lines
        new = data["cells"]["default"]["max-nosve"]["layouts"]  # type: ignore[index]
        assert (new["Q4_0"], new["Q4_K"], new["Q8_0"]) == ("q4_0_4x8", "q4_K_8x8", "q8_0_4x8")


def test_a_readme_without_its_markers_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    with pytest.raises(UserError, match=r"README.md must hold exactly one .* block"):
        repack_report.write(committed(), tmp_path / "docs", readme)
    assert not (tmp_path / "docs").exists() and readme.read_text() == "# no markers here\n"


def test_layout_columns_shorten_names_and_mark_none() -> None:
    cell = {"verdict": "pass", "variant": "armv8.6_nosve", "layouts": {"Q4_0": "q4_0_4x8", "Q4_K": "q4_K_8x8"}}
    assert repack_report._row(cell, ["Q4_0", "Q4_K", "IQ4_NL"]) == ["pass", "armv8.6_nosve", "4x8", "8x8", "-"]
    assert repack_report._row({**cell, "verdict": "fail"}, ["Q4_0"]) == ["fail", "armv8.6_nosve", "-"]
    assert oracle.layout_type("q4_K_8x8") == "Q4_K"

