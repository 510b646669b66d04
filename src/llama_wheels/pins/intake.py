"""``llama-wheels pin add|check``: take a new llama-cpp-python release into build_config/, or re-check the
committed pins, with every check reported at once.

For a pin (a new one, or a committed one) it:

- looks the sdist up on the package index (PEP 691), downloads, verifies and caches it (``stages.fetch``);
- reads the llama.cpp commit the sdist vendors (``stages.patching.vendored_commit``);
- carries the patch series over: in a scratch git repository holding the files the series touches, the
  base release's tree with the series applied (so every blob a patch names is there) and the new release's
  tree; each patch goes onto the new tree with ``git am --3way`` and is reported clean / offset / merged /
  conflict (with the hunks ``git apply --reject`` rejects). A failure never stops the others; the refreshed
  patches are ``git format-patch`` files keeping the original headers;
- checks each switch's CMake name against the patched new tree's option()/CACHE declarations, suggesting
  near names (difflib) for one that is gone;
- plans every target of targets.toml at the pin and checks it against those declarations; the pin's own
  targets (its ``targets``, else the default target) must pass;
- compares ggml's declared CPU variants (ggml/src/CMakeLists.txt, via the oracle) with the base release's.

``pin add`` writes the new ``[pins.NAME]`` entry and patches/<VERSION>/ only when everything passed, each
atomically; otherwise nothing. A patch conflict is a step, not a dead end: the series is also carried into a
named worktree (``<checkout>/.pin-add/<name>/repo``) where ``git am`` stops at the conflicting patch with its
conflict markers; ``pin add --continue`` (after the engineer resolved and staged it) carries the rest and
runs every check on the series as resolved before writing the pin; ``--abort`` removes the worktree.
Nothing here compiles.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from llama_wheels.config import SWITCHES, Config, Pin, SwitchMapping, load
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache, atomic_path, remove
from llama_wheels.core.errors import ConfigError, LlamaWheelsError, PatchError, UserError
from llama_wheels.pins.carry import (
    NEW_RELEASE,
    WORKTREES,
    Stopped,
    am_in_progress,
    apply_refreshed,
    carry_patches,
    run_git,
    stop_at_conflict,
    stopped_patch,
    stray_paths,
    touched_paths,
    unmerged_paths,
    worktree_dir,
)
from llama_wheels.pins.checks import (
    TreeFacts,
    check_switches,
    check_targets,
    expectation_drift,
    repack_lines,
    variant_lines,
)
from llama_wheels.pins.report import PinReport
from llama_wheels.pins.sources import Sources, open_sources
from llama_wheels.stages.fetch import find_sdist
from llama_wheels.stages.patching import commit_matches, vendored_commit

_PIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


_CMAKE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def examine(config: Config, pin: Pin, patch_base: Pin, patches: Sequence[Path], sources: Sources,
            scratch: Path, *, compare: TreeFacts | None = None,
            variant_detail: bool = True) -> tuple[PinReport, TreeFacts, TreeFacts]:
    """Every check of ``pin`` (which ``config`` holds): its series ``patches`` carried from ``patch_base``'s
    tree, switch renames and variants against ``compare`` (default: ``patch_base`` with the series).

    Returns the report, the facts of ``pin``'s patched tree and of ``patch_base``'s.
    """
    touched = touched_paths(patches)
    new_tree = sources.copy(sources.tree(pin, touched))
    base_tree = sources.copy(sources.tree(patch_base, touched))
    strays = stray_paths(patches, new_tree)
    vendored = vendored_commit(new_tree, pin.version)
    if not commit_matches(pin.llama_cpp_commit, vendored.commit):
        raise ConfigError(f"pins.{pin.name}.llama_cpp_commit is {pin.llama_cpp_commit}, but the sdist vendors "
                          f"llama.cpp@{vendored.commit} ({vendored.source}); correct build_config/pins.toml")
    results, _ = carry_patches(patches, config.root, base_tree, new_tree, scratch, patched_old=base_tree)
    apply_refreshed(results, new_tree, scratch / "refreshed")
    facts, base_facts = TreeFacts.read(pin, new_tree), TreeFacts.read(patch_base, base_tree)
    other = compare or base_facts
    report = PinReport(
        pin=pin, patch_base=patch_base, base=other.pin, commit_source=vendored.source, patches=tuple(results),
        switches=tuple(check_switches(pin.switches, facts.declared, other.declared, other.pin.version)),
        targets=tuple(check_targets(config, pin, facts.declared)),
        variants=tuple(variant_lines(other.ggml, facts.ggml, other.pin.version, pin.version,
                                     detail=variant_detail)),
        repack=tuple(repack_lines(other, facts)),
        drift=tuple(expectation_drift(other, facts)) if compare is None else (),  # pin add's verdict
        strays=tuple(strays),
    )
    return report, facts, base_facts


def check_pins(config: Config, names: Sequence[str], cache: Cache) -> list[PinReport]:
    """The committed pins' checks: each pin's own series on its own source; switch history and variants
    compared with the default pin (patched too). Offline once their sdists are cached."""
    reports: dict[str, PinReport] = {}
    default: TreeFacts | None = None
    with open_sources(cache) as sources:
        for name in [config.default_pin, *(n for n in names if n != config.default_pin)]:
            pin = config.pin(name)
            patches = [config.patches_dir / pin.version / p for p in pin.patches]
            report, facts, _ = examine(config, pin, pin, patches, sources, sources.root / f"scratch-{name}",
                                       compare=default, variant_detail=False)
            default = default or facts
            reports[name] = report
    return [reports[name] for name in names]


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def pin_entry(pin: Pin, base: Pin, overrides: Mapping[str, SwitchMapping]) -> str:
    """The ``[pins.NAME]`` text appended to pins.toml: its switch table extends the base pin's."""
    key = _toml_key(pin.name)
    lines = [
        "",
        f"# Added by `llama-wheels pin add {pin.version} --from {base.name}`: the patch series carried over from",
        f"# patches/{base.version}/ (why each patch, and when it can go: [pins.{_toml_key(base.name)}]).",
        f"[pins.{key}]",
        f"version = {json.dumps(pin.version)}",
        f"sdist_sha256 = {json.dumps(pin.sdist_sha256)}",
        f"llama_cpp_commit = {json.dumps(pin.llama_cpp_commit)}",
    ]
    if pin.targets:
        lines.append(f"targets = [{', '.join(json.dumps(t) for t in pin.targets)}]")
    lines.append("patches = [" + "".join(f"\n    {json.dumps(p)}," for p in pin.patches)
                 + ("\n]" if pin.patches else "]"))
    lines += ["", f"[pins.{key}.switches]", f"extends = {json.dumps(base.name)}"]
    lines += [f"{switch} = {json.dumps(value)}" for switch, value in overrides.items()]
    return "\n".join(lines) + "\n"


def parse_overrides(items: Sequence[str]) -> dict[str, SwitchMapping]:
    """``--switch KEY=VALUE`` (VALUE ``false``: the revision has no such thing)."""
    overrides: dict[str, SwitchMapping] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise UserError(f"--switch {item!r}: give KEY=CMAKE_NAME, KEY=-flag={{}} or KEY=false")
        if key not in SWITCHES:
            close = difflib.get_close_matches(key, SWITCHES, n=1)
            raise UserError(f"--switch {item!r}: unknown switch {key!r}"
                            + (f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(SWITCHES)})"))
        if value != "false" and not (_CMAKE_NAME.match(value) or (value.startswith("-") and "{}" in value)):
            raise UserError(f"--switch {item!r}: {value!r} is neither a CMake variable name, a -flag={{}} template "
                            "nor false")
        overrides[key] = False if value == "false" else value
    return overrides


@dataclass(frozen=True, kw_only=True)
class Added:
    report: PinReport
    written: tuple[Path, ...]  # what was written (relative to the checkout); empty: nothing
    stopped: Stopped | None = None  # a patch conflict: the series carried up to it, waiting in a worktree


def add_pin(config: Config, version: str, *, from_pin: str | None, name: str | None, cache: Cache,
            overrides: Mapping[str, SwitchMapping] | None = None, series: Sequence[Path] | None = None) -> Added:
    """``pin add``: the report, and the entry + refreshed patches written if every check passed.

    A patch conflict leaves the series carried up to the conflicting patch in a named worktree
    (``Added.stopped``; ``continue_pin`` / ``abort_pin``). ``series``: the patch files to carry instead of
    the base pin's (``continue_pin``: the series as the engineer resolved it).
    """
    overrides = dict(overrides or {})
    base = config.pin(from_pin)
    explicit_name, name = name, name or version
    if not _PIN_NAME.match(name):
        raise UserError(f"pin name {name!r}: use letters, digits, '.', '_' and '-' (--name)")
    if name in config.pins:
        raise UserError(f"pin {name!r} exists already in build_config/pins.toml; give --name another name")
    worktree = worktree_dir(config, name)
    if series is None and worktree.exists():
        raise UserError(f"pin add {version} stopped at a patch conflict earlier; its worktree is {worktree}: "
                        f"resolve, then `llama-wheels pin add {version} --continue`, or `--abort` to start over")
    pinned = [p.name for p in config.pins.values() if p.version == version]
    if pinned and explicit_name is None:
        raise UserError(f"llama-cpp-python {version} is pinned already: pins.{pinned[0]} in build_config/pins.toml; "
                        f"`llama-wheels pin check {pinned[0]}` checks it (a second pin of it on purpose: --name)")
    if not re.match(r"^\d+\.\d+\.\d+$", version):
        raise UserError(f"version {version!r} is not a release version like 0.3.36")
    pins_toml = config.root / "build_config" / "pins.toml"
    original = pins_toml.read_bytes()
    listed = find_sdist(version, culprit="the VERSION given to pin add")
    if listed.sha256 is None:
        raise UserError(f"the index lists {listed.filename} without a sha256; use an index that publishes hashes")
    provisional = dataclasses.replace(base, name=name, version=version, sdist_sha256=listed.sha256,
                                      llama_cpp_commit="0" * 40, switches={**base.switches, **overrides})
    new_dir = config.patches_dir / version
    # A patch already in patches/<VERSION>/ (one refreshed by hand after a conflict) is applied as it is.
    patches = list(series) if series is not None else [
        new_dir / p if (new_dir / p).is_file() else config.patches_dir / base.version / p for p in base.patches]
    with open_sources(cache) as sources:
        vendored = vendored_commit(sources.tree(provisional, touched_paths(patches)), version)
        pin = dataclasses.replace(provisional, llama_cpp_commit=vendored.commit)
        trial = dataclasses.replace(config, pins={**config.pins, name: pin})
        report, _, _ = examine(trial, pin, base, patches, sources, sources.root / "scratch")
        if series is None and any(not p.ok for p in report.patches):
            touched = touched_paths(patches)
            stopped = stop_at_conflict(
                Stopped(worktree=worktree, version=version, name=name, from_pin=base.name, overrides=overrides,
                        series=tuple(str(p) for p in patches), names=tuple(base.patches), at=""),
                old_tree=sources.copy(sources.tree(base, touched)), new_tree=sources.tree(pin, touched))
            return Added(report=report, written=(), stopped=stopped)
    if report.problems:
        return Added(report=report, written=())
    text = original.decode() + pin_entry(pin, base, overrides)
    written = _write(config, pin, report, text, original)
    return Added(report=report, written=written)


def _write(config: Config, pin: Pin, report: PinReport, text: str, original: bytes) -> tuple[Path, ...]:
    """patches/<VERSION>/ (new files only) and pins.toml, each atomically; on any failure, neither."""
    pins_toml = config.root / "build_config" / "pins.toml"
    new_dir = config.patches_dir / pin.version
    fresh = [p for p in report.patches if not (new_dir / p.name).is_file()]
    with tempfile.TemporaryDirectory(prefix="llama-wheels-pin-check-") as tmp:
        # The entry as it will be: loaded (every rule of config) with the refreshed patches in place.
        trial = Path(tmp)
        (trial / "build_config").mkdir()
        (trial / "build_config" / "pins.toml").write_text(text)
        shutil.copy2(config.root / "build_config" / "targets.toml", trial / "build_config" / "targets.toml")
        shutil.copytree(config.patches_dir, trial / "patches")
        (trial / "patches" / pin.version).mkdir(exist_ok=True)
        for p in fresh:
            assert p.refreshed is not None
            (trial / "patches" / pin.version / p.name).write_text(p.refreshed)
        loaded = load(trial).pin(pin.name)
        if (loaded.version, loaded.sdist_sha256, loaded.llama_cpp_commit, loaded.patches, dict(loaded.switches)) != (
                pin.version, pin.sdist_sha256, pin.llama_cpp_commit, pin.patches, dict(pin.switches)):
            raise LlamaWheelsError(f"pin add: the entry written for {pin.name} does not read back as the pin "
                                   "checked; nothing written (a bug: please report it)")
    written: list[Path] = []
    created_dir = not new_dir.exists()
    try:
        for p in fresh:
            assert p.refreshed is not None
            with atomic_path(new_dir / p.name) as tmp_file:
                tmp_file.write_text(p.refreshed)
                tmp_file.chmod(0o644)
            written.append(new_dir / p.name)
        if pins_toml.read_bytes() != original:
            raise UserError(f"{pins_toml} changed while pin add ran; nothing written, run it again")
        with atomic_path(pins_toml) as tmp_file:
            tmp_file.write_text(text)
            tmp_file.chmod(0o644)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if created_dir:
            remove(new_dir)
        raise
    return (*(p.relative_to(config.root) for p in written), pins_toml.relative_to(config.root))


def continue_pin(config: Config, version: str, *, name: str | None, cache: Cache) -> Added:
    """``pin add --continue``: finish the resolved patch, carry the rest (stopping again at the next
    conflict), then run every check on the series as resolved and write the pin atomically."""
    stopped = Stopped.load(config, name or version, version)
    repo = stopped.repo
    if am_in_progress(repo):
        unmerged = unmerged_paths(repo)
        if unmerged:
            raise UserError(f"{', '.join(unmerged)} in {repo} still unmerged: resolve the conflict, `git add` "
                            f"the files, then `llama-wheels pin add {version} --continue`")
        staged = run_git(repo, "diff", "--cached", "--name-only").output.split()
        marked = [f for f in staged if (repo / f).is_file() and re.search(
            r"^(<{7}|>{7})( |$)", (repo / f).read_text(encoding="utf-8", errors="replace"), re.M)]
        if marked:
            raise UserError(f"{', '.join(marked)} in {repo} still hold conflict markers; resolve them, `git add`, "
                            "then --continue")
        am = run_git(repo, "am", "--continue", check=False)
        if am.returncode != 0 and am_in_progress(repo):
            stopped = dataclasses.replace(stopped, at=stopped_patch(repo, stopped), conflicts=unmerged_paths(repo))
            stopped.save()
            if stopped.conflicts:
                raise PatchError(f"pin add {version}: {stopped.at} conflicts too, in {', '.join(stopped.conflicts)}; "
                                 f"resolve it in {repo}, `git add`, then --continue again")
            raise PatchError(f"pin add {version}: git am stopped at {stopped.at} in {repo}: "
                             f"{runner.telling_line(am.tail)}; fix it there, then --continue")
    commits = run_git(repo, "rev-list", "--reverse", f"{NEW_RELEASE}..HEAD").output.split()
    if len(commits) != len(stopped.names):
        raise UserError(f"{repo} holds {len(commits)} commits on the new release, the series has "
                        f"{len(stopped.names)} patches: every patch must stay one commit (no skip, no squash)")
    resolved = stopped.worktree / "resolved"
    remove(resolved)
    resolved.mkdir()
    series = []
    for commit, patch_name in zip(commits, stopped.names, strict=True):
        text = run_git(repo, "format-patch", "-1", "--stdout", "--zero-commit", "--no-signature", commit).output
        (resolved / patch_name).write_text(text)
        series.append(resolved / patch_name)
    added = add_pin(config, version, from_pin=stopped.from_pin, name=stopped.name, cache=cache,
                    overrides=stopped.overrides, series=series)
    if added.written:
        remove(stopped.worktree)
        _drop_empty(config.root / WORKTREES)
    return added


def abort_pin(config: Config, version: str, *, name: str | None) -> Path:
    """``pin add --abort``: remove the worktree of a stopped ``pin add`` (nothing else was written)."""
    stopped = Stopped.load(config, name or version, version)
    remove(stopped.worktree)
    _drop_empty(config.root / WORKTREES)
    return stopped.worktree


def _drop_empty(directory: Path) -> None:
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
