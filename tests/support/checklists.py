"""The README's numbered checklists, read and run as written (tests/unit/test_checklists.py and
tests/extended/test_checklists.py), so they cannot rot.

A step's commands are its inline code spans that start with ``.venv/bin/llama-wheels``, ``git`` or an
environment assignment before one of them; they run in order, in a scratch clone of this checkout, with
``.venv/bin/llama-wheels`` meaning this checkout's command line. A command that names ``OWNER``/``REPO``
(the GitHub repository) runs only on GitHub: it is returned apart, never silently dropped.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.checkout import REPO

LLAMA_WHEELS = ".venv/bin/llama-wheels"
_COMMAND = re.compile(r"^(?:[A-Z_]+=\S+ )*(?:\.venv/bin/llama-wheels|git) ")
_GITHUB = re.compile(r"\bOWNER\b|\bREPO\b")


@dataclass(frozen=True)
class Step:
    number: int
    text: str

    @property
    def spans(self) -> list[str]:
        return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", self.text)]

    @property
    def commands(self) -> list[str]:
        return [span for span in self.spans if _COMMAND.match(span)]


def checklist(heading: str, readme: Path = REPO / "README.md") -> list[Step]:
    """The numbered steps under ``## heading`` (continuation lines joined; sub-bullets belong to their step)."""
    text = readme.read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    steps: list[Step] = []
    for line in section.splitlines():
        match = re.match(r"^(\d+)\. (.*)", line)
        if match:
            steps.append(Step(int(match[1]), match[2]))
        elif steps and line.startswith("   ") and line.strip():
            steps[-1] = Step(steps[-1].number, steps[-1].text + " " + line.strip())
        elif steps and line.strip() and not line.startswith(" "):
            break  # the prose after the list
    return steps


def github_only(command: str) -> bool:
    return bool(_GITHUB.search(command))


def scratch_clone(dest: Path) -> Path:
    """A clone of this checkout's HEAD: its own build_config/, .github/ and code run the commands."""
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(dest)], check=True, timeout=300)
    for key, value in (("user.name", "Checklist"), ("user.email", "checklist@localhost")):
        subprocess.run(["git", "config", key, value], cwd=dest, check=True)
    return dest


def run(command: str, clone: Path, *, env: dict[str, str] | None = None,
        timeout: float = 7200) -> subprocess.CompletedProcess[str]:
    """``command`` as the README writes it, in ``clone``: ``.venv/bin/llama-wheels`` is the clone's own code
    under this interpreter (the venv of the checkout under test)."""
    shell = command.replace(LLAMA_WHEELS, f"{shlex.quote(sys.executable)} -m llama_wheels")
    # nothing may wait for a person: no editor, no prompt, no terminal
    environ = {**os.environ, **(env or {}), "PYTHONPATH": str(clone / "src"), "GIT_EDITOR": "false",
               "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(["bash", "-c", f"set -euo pipefail; {shell}"], cwd=clone, env=environ,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
