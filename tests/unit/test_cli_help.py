"""The command line explains itself: every command has a summary, a description and an example; the top-level
help lists the commands one line each; --version names the tool, the pins and the qemu pin; one exit-code
policy (a missing file is bad input everywhere, --debug keeps the code); --json where machines read; logs go
to the cache, never the working directory; clean says what it would remove; completion comes from the parser."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llama_wheels import reference
from llama_wheels.cli import parser
from llama_wheels.config import load
from llama_wheels.config.qemu_spec import load_qemu_spec
from llama_wheels.core.errors import ConfigError
from llama_wheels.plan import plan
from tests.support.checkout import REPO


def run(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO / "src"), "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-m", "llama_wheels", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=300)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("llama-wheels: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_every_command_has_a_summary_a_description_and_an_example() -> None:
    assert reference.undocumented(parser()) == []
    commands = reference.walk(parser())
    assert len(commands) >= 20  # the walk reaches the subcommands of pin, ci and docs too
    assert {"llama-wheels pin add", "llama-wheels ci generate", "llama-wheels docs check"} <= {
        sub.prog for _, sub in commands}


def test_a_command_without_description_or_example_is_caught() -> None:
    """The sabotage: a bare sub-parser is named, and the reference page refuses to be written without it."""
    top = parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    sub.add_parser("bare", help="a command that explains nothing")
    sub.choices["plan"].add_argument("--quiet", action="store_true")
    assert reference.undocumented(top) == ["llama-wheels plan: --quiet has no help=",
                                           "llama-wheels bare: no a description and no an example"]
    with pytest.raises(ConfigError, match=r"llama-wheels plan: --quiet has no help= \(and 1 more\)"):
        reference.cli_page(top)


def test_every_subcommand_help_shows_its_description_and_examples() -> None:
    for _, sub in reference.walk(parser()):
        text = sub.format_help()
        assert "examples:\n  llama-wheels " in text, sub.prog
        assert " ".join((sub.description or "").split()[:4]) in " ".join(text.split()), sub.prog
    result = run("pin", "add", "--help")  # and through the command line
    assert result.returncode == 0 and "examples:\n  llama-wheels pin add " in result.stdout


def test_top_level_help_lists_each_command_on_one_line() -> None:
    result = run("--help")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    start = lines.index("commands:") + 1
    listed = []
    for line in lines[start:]:
        if not line.strip():
            break
        assert line.startswith("    ") and not line.startswith("     "), f"a wrapped or stray line: {line!r}"
        listed.append(line.split()[0])
    assert listed == [name for name, _, _ in reference.subcommands(parser())]
    assert "exit codes: 0 ok; 1 " in result.stdout and "2 bad input" in result.stdout


def test_version_names_the_tool_the_pins_and_qemu() -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    config = load(REPO)
    assert result.stdout.startswith("llama-wheels ")
    for pin in config.pins.values():
        assert f"pin {pin.name}: llama-cpp-python {pin.version}" in result.stdout
    assert f"pin {config.default_pin}: " in result.stdout and "(default" in result.stdout
    assert load_qemu_spec(REPO).version in result.stdout


def test_version_outside_a_checkout_still_names_the_tool(tmp_path: Path) -> None:
    result = run("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("llama-wheels ") and "pins: not read (no build_config/pins.toml" in result.stdout


@pytest.mark.parametrize("args", [("audit", "{}"), ("test", "{}"), ("inspect", "{}"), ("repair", "{}"),
                                  ("convert-model", "{}", "out.gguf"), ("index", "{}", "site"),
                                  ("ci", "repair", "{}", "--dest", "out")])
def test_a_missing_file_is_bad_input_everywhere(args: tuple[str, ...], tmp_path: Path) -> None:
    missing = tmp_path / "missing.whl"
    result = run(*(a.format(missing) for a in args), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert str(missing) in line and ("no such file" in line or "no such directory" in line)
    assert "Traceback" not in result.stderr


def test_bad_arguments_end_in_one_line_with_exit_code_2(tmp_path: Path) -> None:
    result = run("test", "--jobs", "-1", str(REPO / "pyproject.toml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "argument --jobs: -1 is not above zero" in one_error_line(result)
    assert not result.stdout


def test_debug_adds_the_traceback_and_keeps_the_exit_code() -> None:
    plain, debug = run("plan", "--pin", "no-such-pin"), run("--debug", "plan", "--pin", "no-such-pin")
    assert plain.returncode == debug.returncode == 2
    assert "Traceback" not in plain.stderr and "Traceback" in debug.stderr
    assert one_error_line(plain) == one_error_line(debug)


def test_the_json_flag_is_on_every_command_machines_read() -> None:
    for command in ("plan", "test", "audit", "inspect", "pin check"):
        sub = next(s for _, s in reference.walk(parser()) if s.prog == f"llama-wheels {command}")
        assert any("--json" in a.option_strings for a in sub._actions), command


def test_plan_json_is_the_plan() -> None:
    result = run("plan", "--json")
    assert result.returncode == 0, result.stderr
    jobs = plan(load(REPO))
    data = json.loads(result.stdout)
    assert [job["job"] for job in data] == [job.name for job in jobs]
    assert data[0]["cmake_args"] == jobs[0].cmake_args()
    assert data[0]["patches"] == [f"patches/{jobs[0].pin.version}/{p}" for p in jobs[0].pin.patches]


def test_logs_go_to_the_cache_not_the_working_directory(tmp_path: Path) -> None:
    work, cache = tmp_path / "work", tmp_path / "cache"
    (work / "dist").mkdir(parents=True)
    result = run("index", "dist", "site", cwd=work, env={"LLAMA_WHEELS_CACHE": str(cache)})
    assert "full log: " in result.stderr
    assert not (work / "logs").exists()
    [log] = (cache / "logs").glob("*-index.log")
    assert f"full log: {log}" in result.stderr


def test_clean_dry_run_removes_nothing_and_says_what_it_would(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "build" / "tree").mkdir(parents=True)
    (cache / "build" / "tree" / "object.o").write_bytes(b"x" * 2_000_000)
    (cache / "sdists").mkdir()
    env = {"LLAMA_WHEELS_CACHE": str(cache)}
    result = run("clean", "--all", "--dry-run", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert f"would remove {cache / 'build'} (2.0 MB)" in result.stdout
    assert f"would remove {cache / 'sdists'} (0.0 MB)" in result.stdout
    assert f"absent  {cache / 'ccache'}" in result.stdout
    assert (cache / "build" / "tree" / "object.o").is_file() and (cache / "sdists").is_dir()
    result = run("clean", cwd=tmp_path, env=env)
    assert f"removed {cache / 'build'}" in result.stdout and not (cache / "build").exists()
    assert (cache / "sdists").is_dir()  # not without --all


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_is_generated_from_the_parser(shell: str) -> None:
    result = run("completion", shell)
    assert result.returncode == 0, result.stderr
    for name, _, _ in reference.subcommands(parser()):
        assert name in result.stdout, name
    assert "convert-model" in result.stdout and "--cell-timeout" in result.stdout
    if shell == "bash":
        subprocess.run(["bash", "-n"], input=result.stdout, text=True, check=True)
