"""The documentation: the site builds with `mkdocs build --strict` (a broken link fails it), the generated
reference pages match the code, and the README stays a landing page: at most ~200 lines, exactly two commands,
its intro included into the site's front page."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from llama_wheels import reference
from llama_wheels.cli import parser
from llama_wheels.core.errors import ConfigError
from tests.support.checkout import REPO, cli


def scratch_site(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copy(REPO / "mkdocs.yml", root)
    shutil.copy(REPO / "README.md", root)
    return root


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """`llama-wheels docs build`, as the release's index job runs it to publish the site beside the index."""
    result = cli("docs", "build", str(tmp_path / "site" / "docs"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"documentation site: {tmp_path / 'site' / 'docs'}/index.html"
    site = tmp_path / "site" / "docs"
    assert "really works" in (site / "index.html").read_text()  # README's intro, included
    for page in ("guide", "design", "measurements", "reports", "reference/cli", "reference/config",
                 "reference/tests", "reference/record"):
        assert (site / page / "index.html").is_file(), page


def test_a_broken_link_fails_the_build_and_writes_nothing(tmp_path: Path) -> None:
    """The sabotage: a link to a page that does not exist and one to a missing section; the first is named,
    exit 2, and the site directory is not created."""
    root = scratch_site(tmp_path)
    guide = root / "docs" / "guide.md"
    guide.write_text(guide.read_text() + "\nSee [gone](no-such-page.md) and [gone](design.md#no-such-section).\n")
    out = tmp_path / "site"
    result = cli("--config", str(root), "docs", "build", str(out))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"llama-wheels: error: {root / 'docs'}: the site does not build strictly: "), line
    assert "contains a link 'no-such-page.md', but the target is not found" in line, line
    assert "(and 1 more: see the log)" in line, line
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["checkout"]


def test_generated_pages_match_the_code() -> None:
    assert reference.drift(REPO, parser()) == [], "run `llama-wheels docs generate` and commit the result"


def test_an_edited_generated_page_is_drift(tmp_path: Path) -> None:
    root = tmp_path / "checkout"
    for rel in (*reference.PAGES, Path("pyproject.toml"), Path("scripts/test.sh"), Path("docs/arm.json"),
                Path("build_config/cpus.toml"), Path("tests/support/tiers.py"),
                *(Path("build_config") / name for name in reference.BED_FILES)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, root / rel)
    assert reference.drift(root, parser()) == []
    page = root / reference.CLI_PAGE
    page.write_text(page.read_text().replace("| `--debug` |", "| `--verbose` |"))
    readme = root / "README.md"
    assert "| **x5.03** |" in readme.read_text()
    readme.write_text(readme.read_text().replace("| **x5.03** |", "| **x9.99** |"))
    assert reference.drift(root, parser()) == [reference.CLI_PAGE, reference.README]
    assert reference.generate(root, parser()) == [reference.CLI_PAGE, reference.README]
    assert reference.drift(root, parser()) == []


def test_the_readme_table_needs_the_official_builds_counts(tmp_path: Path) -> None:
    """The README leads with ours against llama-cpp-python's own build: an arm.json without that build's
    counts for a class is refused, naming the class and the run that makes them."""
    root = tmp_path / "checkout"
    for rel in (Path("docs/arm.json"), Path("build_config/cpus.toml")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, root / rel)
    assert "neoverse-v2 is counted for its llvm-mca model only" in reference.arm_comparison(root)
    data = json.loads((root / "docs/arm.json").read_text())
    del data["classes"]["neoverse-v1"]["official"]
    (root / "docs/arm.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"docs/arm.json: class neoverse-v1 has no official-build counts; rerun"):
        reference.arm_comparison(root)


def test_the_cli_page_documents_every_command_and_option() -> None:
    page = (REPO / reference.CLI_PAGE).read_text()
    for _, sub in reference.walk(parser()):
        assert f"## `{sub.prog}`" in page, sub.prog
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert f"`{option}`" in page, (sub.prog, option)


def leaf_keys(table: dict[str, object], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in table.items():
        if isinstance(value, dict):
            keys |= leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.add(key)
    return keys


@pytest.mark.parametrize(("name", "table"), [("pins.toml", "pins"), ("targets.toml", "targets"),
                                             ("cpus.toml", "cpus")])
def test_the_config_page_documents_every_key_the_committed_files_use(name: str, table: str) -> None:
    page = (REPO / reference.CONFIG_PAGE).read_text()
    with (REPO / "build_config" / name).open("rb") as fh:
        data = tomllib.load(fh)
    used = leaf_keys({k: v for k, v in data.items() if k != table})
    for entry in data[table].values():
        used |= {k for k in leaf_keys(entry)}
    for key in sorted(used):
        assert f"`{key}`" in page, f"{name}: key {key!r} is not on {reference.CONFIG_PAGE}"


def test_an_undocumented_config_field_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference, "field_docs", lambda cls: {})
    with pytest.raises(ConfigError, match=r"llama_wheels.config.Pin.version: no comment"):
        reference.config_page(REPO)


README = (REPO / "README.md").read_text()


def test_the_readme_is_a_landing_page() -> None:
    assert len(README.splitlines()) <= 200


def test_the_readme_has_exactly_two_commands() -> None:
    section = README.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    commands = [line.split()[0] for line in section.splitlines() if line.startswith("    ")]
    assert commands == ["scripts/build.sh", "scripts/test.sh"]


def test_the_readme_intro_is_the_sites_front_page() -> None:
    intro = re.search(r"<!-- intro-start -->\n(.*?)<!-- intro-end -->", README, re.S)
    assert intro and len(intro[1].split()) > 50
    index = (REPO / "docs" / "index.md").read_text()
    assert 'include-markdown "../README.md"' in index
    assert 'start="<!-- intro-start -->"' in index and 'end="<!-- intro-end -->"' in index

