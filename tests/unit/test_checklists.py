"""The README's "Cut a release" checklist runs: its commands, in their order, in a scratch clone whose origin
is a local bare repository and whose tags are signed with a throwaway SSH key. Commands naming the GitHub
repository (OWNER/REPO) are GitHub's to run: listed, never dropped silently. The "Add a llama-cpp-python
version" checklist compiles a release and runs in the extended tier (tests/extended/test_checklists.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.checklists import checklist, github_only, run, scratch_clone

RELEASE = "Cut a release"
ADD = "Add a llama-cpp-python version"


def test_the_checklists_are_numbered_steps_with_commands() -> None:
    for heading in (RELEASE, ADD):
        steps = checklist(heading)
        assert [s.number for s in steps] == list(range(1, len(steps) + 1)), heading
        assert sum(len(s.commands) for s in steps) >= 3, heading


def test_the_cut_a_release_checklist_runs(tmp_path: Path) -> None:
    clone = scratch_clone(tmp_path / "clone")
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    subprocess.run(["git", "remote", "set-url", "origin", str(origin)], cwd=clone, check=True)
    key = tmp_path / "signing-key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "checklist", "-f", str(key)], check=True)
    for setting, value in (("gpg.format", "ssh"), ("user.signingkey", f"{key}.pub")):
        subprocess.run(["git", "config", setting, value], cwd=clone, check=True)

    ran, github = [], []
    for step in checklist(RELEASE):
        for command in step.commands:
            if github_only(command):
                github.append(command)
                continue
            result = run(command, clone, timeout=600)
            assert result.returncode == 0, f"step {step.number}: {command}\n{result.stdout}{result.stderr}"
            ran.append(command)
    assert [c for c in ran if " ci check" in c] and [c for c in ran if c.startswith("git tag -s ")]
    assert github == ["GH_REPO=OWNER/REPO .venv/bin/llama-wheels release doctor --check"]
    tag = re.search(r"git tag -s (\S+)", " ".join(ran))[1]  # type: ignore[index]
    pushed = subprocess.run(["git", "cat-file", "tag", tag], cwd=origin, capture_output=True, text=True)
    assert pushed.returncode == 0, f"{tag} did not reach origin"
    assert "-----BEGIN SSH SIGNATURE-----" in pushed.stdout


def test_a_failing_step_fails_the_run(tmp_path: Path) -> None:
    """The sabotage: a clone whose generated CI files drifted fails the checklist's `ci check` step."""
    clone = scratch_clone(tmp_path / "clone")
    workflow = clone / ".github" / "workflows" / "wheels.yml"
    workflow.write_text(workflow.read_text() + "# edited by hand\n")
    [command] = [c for s in checklist(RELEASE) for c in s.commands if " ci check" in c]
    result = run(command, clone, timeout=600)
    assert result.returncode == 2 and "wheels.yml" in result.stderr
