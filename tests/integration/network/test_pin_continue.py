"""A patch conflict is a step, on a real older release: `pin add 0.3.34` stops at
0003-use-extra-bufts-keyword.patch (0.3.34's Llama() still sets use_mmap/use_mlock where 0.3.36 computes a
load mode) in a named worktree with the conflict markers; resolved the way an engineer would (0.3.34's own
lines, plus the one line the patch adds), `--continue` carries the rest and writes the pin, which `pin check`
then passes; `--abort` removes the worktree and nothing is written. Network: the 0.3.34 sdist, once."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from llama_wheels.config import load
from tests.support.checkout import cli, pinned
from tests.support.pins import pin_add, snapshot, statuses

OLD = "0.3.34"  # the newest release before the default pin whose series conflicts (measured: 0003)
CONFLICTING = "0003-use-extra-bufts-keyword.patch"


def without_worktrees(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in snapshot(root).items() if not k.startswith(".pin-add/")}


def resolve(llama_py: Path) -> None:
    """Each conflict: the old release's lines (HEAD) and the line the patch adds (`use_extra_bufts`)."""
    def keep(match: re.Match[str]) -> str:
        ours, theirs = match[1], match[2]
        return ours + "".join(line + "\n" for line in theirs.splitlines() if "use_extra_bufts" in line)

    text, count = re.subn(r"^<<<<<<< [^\n]*\n(.*?)^=======\n(.*?)^>>>>>>> [^\n]*\n", keep, llama_py.read_text(),
                          flags=re.S | re.M)
    assert count >= 1
    llama_py.write_text(text)


def test_a_real_conflict_stops_resolves_and_continues(config_root: Path) -> None:
    before = snapshot(config_root)
    code, out, err = pin_add(config_root, OLD)
    assert code == 2, out + err
    assert statuses(out)[CONFLICTING] == "conflict"
    repo = config_root / ".pin-add" / OLD / "repo"
    assert f"stopped    at {CONFLICTING}: the series is carried up to it in {repo}" in out
    assert "conflict markers in llama_cpp/llama.py" in out
    assert f"`llama-wheels pin add {OLD} --continue`" in out and f"`llama-wheels pin add {OLD} --abort`" in out
    assert without_worktrees(config_root) == before  # nothing written to build_config/ or patches/
    llama_py = repo / "llama_cpp" / "llama.py"
    assert "<<<<<<< HEAD" in llama_py.read_text()
    # the patches before the conflicting one are applied in the worktree, the ones after it wait
    log = subprocess.run(["git", "log", "--format=%s", "new-release..HEAD"], cwd=repo, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert len(log) == pinned().patches.index(CONFLICTING)

    resolve(llama_py)
    subprocess.run(["git", "add", "llama_cpp/llama.py"], cwd=repo, check=True)
    code, out, err = pin_add(config_root, OLD, "--continue")
    assert code == 0, out + err
    assert set(statuses(out)) == set(pinned().patches) and "conflict" not in statuses(out).values()
    assert not (config_root / ".pin-add").exists()
    pin = load(config_root).pin(OLD)
    assert pin.patches == pinned().patches
    carried = (config_root / "patches" / OLD / CONFLICTING).read_text()
    assert "+        self.model_params.use_extra_bufts = use_extra_bufts\n" in carried
    assert "LLAMA_LOAD_MODE" not in carried  # 0.3.36's load-mode code did not come along
    check = cli("--config", str(config_root), "--log", str(config_root.parent / "check.log"), "pin", "check", OLD,
                cwd=config_root)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "result     ok" in check.stdout


def test_abort_on_a_real_conflict(config_root: Path) -> None:
    before = snapshot(config_root)
    assert pin_add(config_root, OLD)[0] == 2
    code, out, err = pin_add(config_root, OLD, "--abort")
    assert code == 0, err
    assert f"removed {config_root / '.pin-add' / OLD}; nothing was written" in out
    assert snapshot(config_root) == before
