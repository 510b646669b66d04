"""Carrying a patch series onto a new release's tree: in a scratch git repository holding the files the series
touches (the base release's with the series applied, so every blob a patch names is there, and the new
release's), each patch goes on with ``git am --3way`` and is reported clean / offset / merged / conflict (with
the hunks ``git apply --reject`` rejects), refreshed as a ``git format-patch`` file. A conflict is a step: the
series is also carried into a named worktree where ``git am`` stops at it (``Stopped``), for ``pin add
--continue`` / ``--abort``.

Carrying writes the refreshed patches; applying them stays the build's own engine (``stages.patching``): the
checks read the new tree as ``prepare`` leaves it."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from llama_wheels.config import Config, SwitchMapping
from llama_wheels.core import runner
from llama_wheels.core.cache import atomic_path, remove
from llama_wheels.core.errors import LlamaWheelsError, UserError
from llama_wheels.pins.report import PatchResult
from llama_wheels.stages.patching import apply_patch

_DIFF_PATH = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.MULTILINE)


_OFFSET = re.compile(r"^Hunk #(\d+) succeeded at (\d+) (?:\((offset -?\d+ lines?)\)|\(fuzz)", re.MULTILINE)


NEW_RELEASE = "new-release"  # the tag of the new release's files in a scratch repository


_GIT = ("git", "-c", "user.name=llama-wheels", "-c", "user.email=llama-wheels@localhost", "-c",
        "commit.gpgsign=false", "-c", "core.autocrlf=false", "-c", "am.keepcr=true")


def touched_paths(patches: Sequence[Path]) -> set[str]:
    paths: set[str] = set()
    for patch in patches:
        for a, b in _DIFF_PATH.findall(patch.read_text(encoding="utf-8", errors="replace")):
            paths.update((a, b))
    return paths


def stray_paths(patches: Sequence[Path], tree: Path) -> list[str]:
    """A patch touches only the source tree it patches: every path it names is a file of ``tree`` (the unpatched
    sdist, all of whose directories are unpacked) or a new file in one of its directories. Anything else (a
    stray ``out/0001-....patch`` that ``git format-patch`` left in the work tree) would be carried into every
    prepared tree and every new pin's series."""
    strays = []
    for patch in patches:
        for rel in sorted(touched_paths([patch])):
            if not ((tree / rel).is_file() or (tree / rel).parent.is_dir()):
                strays.append(f"patch {patch.name} touches {rel}, outside the source tree it patches (no "
                              f"{PurePosixPath(rel).parent}/ in the sdist); remove that file from the patch")
    return strays


def run_git(repo: Path, *args: str | Path, check: bool = True) -> runner.Outcome:
    # Keep git from finding an enclosing repository (the checkout, or the sdist's own .git).
    outcome = runner.probe([*_GIT, *args], cwd=repo, env={"GIT_CEILING_DIRECTORIES": str(repo.parent),
                                                          "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"})
    if check and outcome.returncode != 0:
        raise LlamaWheelsError(f"git {args[0]} failed in the scratch repository {repo}: "
                               f"{runner.telling_line(outcome.tail)}")
    return outcome


def _copy_files(tree: Path, repo: Path, paths: set[str]) -> None:
    for rel in sorted(paths):
        src = tree / rel
        if src.is_file() and not src.is_symlink():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / rel)


def _commit_all(repo: Path, message: str) -> None:
    run_git(repo, "add", "-A", ".")
    run_git(repo, "commit", "-q", "--allow-empty", "--no-verify", "-m", message)


def _rejected_hunks(repo: Path, patch: Path) -> tuple[str, ...]:
    """What ``git apply --reject`` cannot place on the new tree, then the tree as it was."""
    outcome = run_git(repo, "apply", "--reject", "--verbose", "--whitespace=nowarn", patch, check=False)
    hunks = [rej.read_text(encoding="utf-8", errors="replace") for rej in sorted(repo.rglob("*.rej"))
             if ".git" not in rej.relative_to(repo).parts]
    missing = [line.removeprefix("error: ") for line in outcome.tail
               if "No such file or directory" in line or "does not exist in index" in line]
    run_git(repo, "reset", "-q", "--hard", "HEAD")
    run_git(repo, "clean", "-q", "-f", "-d", "-x")
    return tuple(hunks + missing)


def carry_patches(patches: Sequence[Path], root: Path, old_tree: Path, new_tree: Path,
                  scratch: Path, *, patched_old: Path | None = None) -> tuple[list[PatchResult], Path]:
    """Apply ``patches`` (in order) onto ``new_tree``'s files with a 3-way merge against ``old_tree``'s.

    Returns a result per patch and the scratch work tree: ``new_tree``'s touched files with every patch
    that applied. Never stops at a failing patch: the next one goes onto what applied before it. With
    ``patched_old``, that tree gets the touched files as the series leaves ``old_tree``'s.
    """
    repo = _scratch_repository(patches, old_tree, new_tree, scratch / "repo", patched_old=patched_old)
    results = []
    for patch in patches:
        source = str(patch.relative_to(root)) if patch.is_relative_to(root) else str(patch)
        check = run_git(repo, "apply", "--check", "--verbose", "--whitespace=nowarn", patch, check=False)
        am = run_git(repo, "am", "--3way", "--whitespace=nowarn", "--committer-date-is-author-date", patch,
                  check=False)
        if am.returncode != 0:
            run_git(repo, "am", "--abort", check=False)
            run_git(repo, "reset", "-q", "--hard", "HEAD")
            rejected = _rejected_hunks(repo, patch)
            conflicts = sorted({m for m in re.findall(r"(?:CONFLICT \(content\): Merge conflict in|"
                                                      r"error: patch failed:) (\S+?)(?::\d+)?$", am.output,
                                                      re.MULTILINE)})
            if "Patch format detection failed" in am.output:
                detail = "not a git format-patch file; write it with git format-patch"
            else:
                detail = (f"conflict in {', '.join(conflicts)}" if conflicts
                          else runner.telling_line(am.tail) or "git am failed")
            results.append(PatchResult(name=patch.name, source=source, status="conflict", detail=detail,
                                       rejected=rejected))
            continue
        if check.returncode != 0:
            status, detail = "merged", "context changed; a 3-way merge placed it"
        else:
            offsets = [f"hunk #{n} at line {line}" + (f", {off}" if off else ", fuzz")
                       for n, line, off in _OFFSET.findall(check.output)]
            status, detail = ("offset", "; ".join(offsets)) if offsets else ("clean", "")
        refreshed = run_git(repo, "format-patch", "-1", "--stdout", "--zero-commit", "--no-signature", "HEAD").output
        results.append(PatchResult(name=patch.name, source=source, status=status, detail=detail,
                                   refreshed=refreshed))
    return results, repo


def _scratch_repository(patches: Sequence[Path], old_tree: Path, new_tree: Path, repo: Path, *,
                        patched_old: Path | None = None) -> Path:
    """A git repository of the files ``patches`` touch: branch ``old`` with ``old_tree``'s and the series
    applied (every blob a patch's index lines name exists, for the 3-way merges), and branch ``new`` at
    ``new_tree``'s files, tagged ``new-release``, checked out."""
    touched = touched_paths(patches)
    repo.mkdir(parents=True)
    run_git(repo, "init", "-q", "-b", "old")
    for key, value in (("user.name", "llama-wheels"), ("user.email", "llama-wheels@localhost"),
                       ("commit.gpgsign", "false")):  # for the git commands an engineer runs in it too
        run_git(repo, "config", key, value)
    _copy_files(old_tree, repo, touched)
    _commit_all(repo, "base release")
    for patch in patches:  # the series where it was written: every blob its index lines name exists
        if run_git(repo, "apply", "--index", "--whitespace=nowarn", patch, check=False).returncode == 0:
            run_git(repo, "commit", "-q", "--allow-empty", "--no-verify", "-m", patch.name)
        else:
            run_git(repo, "reset", "-q", "--hard", "HEAD")
    if patched_old is not None:
        patched_tree(patched_old, repo, touched)
    run_git(repo, "checkout", "-q", "--orphan", "new")
    run_git(repo, "rm", "-q", "-r", "-f", "--ignore-unmatch", ".")
    run_git(repo, "clean", "-q", "-f", "-d", "-x")
    _copy_files(new_tree, repo, touched)
    _commit_all(repo, "new release")
    run_git(repo, "tag", NEW_RELEASE)
    return repo


def apply_refreshed(results: Sequence[PatchResult], tree: Path, scratch: Path) -> None:
    """The refreshed patches (those that carried) applied to ``tree`` by the build's own engine
    (``stages.patching.apply_patch``), in order: the checks then read the new release as ``prepare`` would
    leave it, and a refreshed patch the build could not apply fails here, naming it."""
    scratch.mkdir(parents=True, exist_ok=True)
    for result in results:
        if result.refreshed is None:
            continue  # a conflict: reported, and nothing of it goes onto the tree
        patch = scratch / result.name
        patch.write_text(result.refreshed)
        apply_patch(tree, patch)


def patched_tree(new_tree: Path, repo: Path, touched: set[str]) -> None:
    """``new_tree`` with the touched files as the scratch repository has them after the series."""
    for rel in touched:
        target = new_tree / rel
        if (repo / rel).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / rel, target)
        elif target.is_file():
            target.unlink()


WORKTREES = ".pin-add"  # <checkout>/.pin-add/<pin name>/ (git-ignored): repo/ and state.json


def worktree_dir(config: Config, name: str) -> Path:
    return config.root / WORKTREES / name


@dataclass(frozen=True, kw_only=True)
class Stopped:
    """``pin add`` stopped at a conflicting patch: ``repo`` holds the new release's files with the series
    applied up to it, ``git am`` stopped there with the conflict markers in the files."""

    worktree: Path
    version: str
    name: str
    from_pin: str
    overrides: dict[str, SwitchMapping]
    series: tuple[str, ...]  # the patch files carried, in order
    names: tuple[str, ...]  # their names in the pin's series
    at: str  # the patch git am stopped at
    conflicts: tuple[str, ...] = ()  # the files with conflict markers

    @property
    def repo(self) -> Path:
        return self.worktree / "repo"

    def render(self) -> str:
        files = ", ".join(self.conflicts) or "the files git status names"
        return "\n".join([
            f"stopped    at {self.at}: the series is carried up to it in {self.repo}",
            f"           (git am stopped there; conflict markers in {files})",
            f"next:      resolve the conflict in {self.repo}, `git add` the files, then "
            f"`llama-wheels pin add {self.version} --continue`;",
            f"           or `llama-wheels pin add {self.version} --abort` to remove {self.worktree}. Nothing has "
            "been written to build_config/ or patches/."])

    def save(self) -> None:
        data = {k: v for k, v in dataclasses.asdict(self).items() if k != "worktree"}
        with atomic_path(self.worktree / "state.json") as tmp:
            tmp.write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, config: Config, name: str, version: str) -> Stopped:
        worktree = worktree_dir(config, name)
        state = worktree / "state.json"
        if not state.is_file():
            raise UserError(f"no pin add of {version} is stopped at a conflict here ({worktree} does not exist); "
                            f"run `llama-wheels pin add {version}` first")
        data = json.loads(state.read_text())
        return cls(worktree=worktree, version=data["version"], name=data["name"], from_pin=data["from_pin"],
                   overrides=dict(data["overrides"]), series=tuple(data["series"]), names=tuple(data["names"]),
                   at=data["at"], conflicts=tuple(data["conflicts"]))


def am_in_progress(repo: Path) -> bool:
    return (repo / ".git" / "rebase-apply").is_dir()


def unmerged_paths(repo: Path) -> tuple[str, ...]:
    return tuple(run_git(repo, "diff", "--name-only", "--diff-filter=U").output.split())


def stop_at_conflict(stopped: Stopped, *, old_tree: Path, new_tree: Path) -> Stopped:
    """Carry the series into ``stopped.worktree`` with one ``git am --3way`` run, which stops at the first
    conflicting patch and leaves its conflict markers in the files."""
    worktree = stopped.worktree
    if worktree.exists():
        raise UserError(f"{worktree} exists; `llama-wheels pin add {stopped.version} --abort` removes it")
    patches = [Path(p) for p in stopped.series]
    try:
        repo = _scratch_repository(patches, old_tree, new_tree, worktree / "repo", patched_old=None)
        am = run_git(repo, "am", "--3way", "--whitespace=nowarn", "--committer-date-is-author-date", *patches,
                  check=False)
        if am.returncode == 0 or not am_in_progress(repo):
            raise LlamaWheelsError(f"pin add {stopped.version}: the series reported a conflict but applied in "
                                   f"{repo} (a bug: please report it)")
        stopped = dataclasses.replace(stopped, at=stopped_patch(repo, stopped), conflicts=unmerged_paths(repo))
        stopped.save()
    except BaseException:
        remove(worktree)
        raise
    return stopped


def stopped_patch(repo: Path, stopped: Stopped) -> str:
    """The series name of the patch ``git am`` stopped at (its position in the am session)."""
    position = int((repo / ".git" / "rebase-apply" / "next").read_text())
    return stopped.names[position - 1]
