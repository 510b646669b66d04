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
atomically; otherwise nothing. Nothing here compiles.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from llama_wheels import oracle
from llama_wheels.config import SWITCHES, Config, Pin, SwitchMapping, load
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache, atomic_path, remove
from llama_wheels.core.errors import ConfigError, LlamaWheelsError, PatchError, UserError
from llama_wheels.plan import plan
from llama_wheels.stages.fetch import fetch_sdist, find_sdist
from llama_wheels.stages.patching import commit_matches, declared_cmake_options, unpack_sdist, vendored_commit

GGML_CMAKE = "vendor/llama.cpp/ggml/src/CMakeLists.txt"
# Where ggml chooses a weight's repacked layout (repack.cpp since mid 2025, ggml-cpu-aarch64.cpp before).
GGML_REPACK = ("vendor/llama.cpp/ggml/src/ggml-cpu/repack.cpp",
               "vendor/llama.cpp/ggml/src/ggml-cpu/ggml-cpu-aarch64.cpp")
_REPACK_FUNCTION = re.compile(r"^static [^\n]*\bggml_\w*get_optimal_repack_type\([^\n]*\{\n(.*?)^\}", re.M | re.S)
_REPACK_TYPE = re.compile(r"\bcur->type == GGML_TYPE_(\w+)")
_DIFF_PATH = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.MULTILINE)
_OFFSET = re.compile(r"^Hunk #(\d+) succeeded at (\d+) (?:\((offset -?\d+ lines?)\)|\(fuzz)", re.MULTILINE)
_PIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_CMAKE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The parts of an sdist the checks read (besides the files the patch series touches): CMake declarations,
# the vendored commit (submodule metadata, CHANGELOG), ggml's variant list.
_SUBMODULE_META = (".git/modules/vendor/llama.cpp/HEAD", ".git/modules/vendor/llama.cpp/packed-refs",
                   "vendor/llama.cpp/.git", "CHANGELOG.md")
_GIT = ("git", "-c", "user.name=llama-wheels", "-c", "user.email=llama-wheels@localhost", "-c",
        "commit.gpgsign=false", "-c", "core.autocrlf=false", "-c", "am.keepcr=true")


@dataclass(frozen=True, kw_only=True)
class PatchResult:
    name: str
    source: str  # the file applied, relative to the checkout
    status: str  # clean | offset | merged | conflict
    detail: str = ""
    rejected: tuple[str, ...] = ()  # the rejected hunks (.rej text) of a conflict
    refreshed: str | None = None  # the format-patch text at the new release (None: conflict)

    @property
    def ok(self) -> bool:
        return self.status != "conflict"


@dataclass(frozen=True, kw_only=True)
class SwitchResult:
    switch: str
    mapping: SwitchMapping
    status: str  # declared | missing | flag | absent
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "missing"


@dataclass(frozen=True, kw_only=True)
class TargetResult:
    target: str
    required: bool
    problem: str | None  # None: plans and every CMake name it sets is declared


@dataclass(frozen=True, kw_only=True)
class PinReport:
    pin: Pin
    patch_base: Pin  # whose patch series, on whose source, was carried onto this pin's
    base: Pin  # what switch names and variants are compared with
    commit_source: str
    patches: tuple[PatchResult, ...]
    switches: tuple[SwitchResult, ...]
    targets: tuple[TargetResult, ...]
    variants: tuple[str, ...]  # lines describing ggml's declared CPU variants and how they changed
    repack: tuple[str, ...] = ()  # lines naming the weight types ggml repacks and how that changed

    @property
    def problems(self) -> list[str]:
        found = [f"patch {p.name} does not apply ({p.detail})" for p in self.patches if not p.ok]
        found += [f"switch {s.switch} = {s.mapping} {s.detail}" for s in self.switches if not s.ok]
        found += [f"target {t.target}: {t.problem}" for t in self.targets if t.required and t.problem]
        return found

    def render(self) -> str:
        pin, base = self.pin, self.base
        lines = [f"pin {pin.name}: llama-cpp-python {pin.version}"
                 + (f" (compared with pin {base.name}: {base.version})" if base.name != pin.name else ""),
                 f"  sdist      {pin.sdist_filename} sha256 {pin.sdist_sha256} (verified, cached)",
                 f"  llama.cpp  {pin.llama_cpp_commit} ({self.commit_source})",
                 f"  patches    (patches/{self.patch_base.version}/ with git am --3way onto this release's tree, "
                 "in a scratch git repository)"]
        if not self.patches:
            lines.append("    (none)")
        for p in self.patches:
            lines.append(f"    {p.status:<9} {p.name}" + (f"  ({p.detail})" if p.detail else "")
                         + (f"  (as in {p.source})" if not p.source.startswith(f"patches/{self.patch_base.version}/")
                            else ""))
            for hunk in p.rejected:
                lines.extend(f"      | {line}" for line in hunk.rstrip("\n").splitlines())
        lines.append("  switches   (CMake names against the patched tree's option()/CACHE declarations)")
        for s in self.switches:
            lines.append(f"    {s.status:<9} {s.switch} = {json.dumps(s.mapping)}"
                         + (f"  {s.detail}" if s.detail else ""))
        required = ", ".join(t.target for t in self.targets if t.required)
        lines.append(f"  targets    (every target planned and checked at this pin; required: {required})")
        for t in self.targets:
            status = "ok" if t.problem is None else ("FAILS" if t.required else "cannot")
            lines.append(f"    {status:<9} {t.target}" + (f"  {t.problem}" if t.problem else ""))
        lines.append(f"  variants   (ggml's declared CPU variants, {GGML_CMAKE})")
        lines.extend(f"    {line}" for line in self.variants)
        if self.repack:
            lines.append("  repack     (the weight types ggml's get_optimal_repack_type handles, ggml-cpu/repack.cpp)")
            lines.extend(f"    {line}" for line in self.repack)
        problems = self.problems
        lines.append("  result     " + (f"{len(problems)} problem(s): " + "; ".join(problems) if problems else "ok"))
        return "\n".join(lines)


# --- the source trees ------------------------------------------------------------------------------------


def _touched(patches: Sequence[Path]) -> set[str]:
    paths: set[str] = set()
    for patch in patches:
        for a, b in _DIFF_PATH.findall(patch.read_text(encoding="utf-8", errors="replace")):
            paths.update((a, b))
    return paths


def _extract(sdist: Path, version: str, dest: Path, touched: set[str]) -> Path:
    """The parts of the sdist the checks read, unpacked into ``dest``."""
    def wanted(rel: str) -> bool:
        return (rel in touched or rel in _SUBMODULE_META or rel in GGML_REPACK
                or rel.endswith(("CMakeLists.txt", ".cmake"))
                or rel.startswith(".git/modules/vendor/llama.cpp/refs/"))

    dest.mkdir(parents=True)
    unpack_sdist(sdist, version, dest, wanted)
    return dest


def _git(repo: Path, *args: str | Path, check: bool = True) -> runner.Outcome:
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
    _git(repo, "add", "-A", ".")
    _git(repo, "commit", "-q", "--allow-empty", "--no-verify", "-m", message)


def _rejected_hunks(repo: Path, patch: Path) -> tuple[str, ...]:
    """What ``git apply --reject`` cannot place on the new tree, then the tree as it was."""
    outcome = _git(repo, "apply", "--reject", "--verbose", "--whitespace=nowarn", patch, check=False)
    hunks = [rej.read_text(encoding="utf-8", errors="replace") for rej in sorted(repo.rglob("*.rej"))
             if ".git" not in rej.relative_to(repo).parts]
    missing = [line.removeprefix("error: ") for line in outcome.tail
               if "No such file or directory" in line or "does not exist in index" in line]
    _git(repo, "reset", "-q", "--hard", "HEAD")
    _git(repo, "clean", "-q", "-f", "-d", "-x")
    return tuple(hunks + missing)


def carry_patches(patches: Sequence[Path], root: Path, old_tree: Path, new_tree: Path,
                  scratch: Path, *, patched_old: Path | None = None) -> tuple[list[PatchResult], Path]:
    """Apply ``patches`` (in order) onto ``new_tree``'s files with a 3-way merge against ``old_tree``'s.

    Returns a result per patch and the scratch work tree: ``new_tree``'s touched files with every patch
    that applied. Never stops at a failing patch: the next one goes onto what applied before it. With
    ``patched_old``, that tree gets the touched files as the series leaves ``old_tree``'s.
    """
    touched = _touched(patches)
    repo = scratch / "repo"
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "old")
    _copy_files(old_tree, repo, touched)
    _commit_all(repo, "base release")
    for patch in patches:  # the series where it was written: every blob its index lines name exists
        if _git(repo, "apply", "--index", "--whitespace=nowarn", patch, check=False).returncode == 0:
            _git(repo, "commit", "-q", "--allow-empty", "--no-verify", "-m", patch.name)
        else:
            _git(repo, "reset", "-q", "--hard", "HEAD")
    if patched_old is not None:
        _patched_tree(patched_old, repo, touched)
    _git(repo, "checkout", "-q", "--orphan", "new")
    _git(repo, "rm", "-q", "-r", "-f", "--ignore-unmatch", ".")
    _git(repo, "clean", "-q", "-f", "-d", "-x")
    _copy_files(new_tree, repo, touched)
    _commit_all(repo, "new release")

    results = []
    for patch in patches:
        source = str(patch.relative_to(root)) if patch.is_relative_to(root) else str(patch)
        check = _git(repo, "apply", "--check", "--verbose", "--whitespace=nowarn", patch, check=False)
        am = _git(repo, "am", "--3way", "--whitespace=nowarn", "--committer-date-is-author-date", patch,
                  check=False)
        if am.returncode != 0:
            _git(repo, "am", "--abort", check=False)
            _git(repo, "reset", "-q", "--hard", "HEAD")
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
        refreshed = _git(repo, "format-patch", "-1", "--stdout", "--zero-commit", "--no-signature", "HEAD").output
        results.append(PatchResult(name=patch.name, source=source, status=status, detail=detail,
                                   refreshed=refreshed))
    return results, repo


def _patched_tree(new_tree: Path, repo: Path, touched: set[str]) -> None:
    """``new_tree`` with the touched files as the scratch repository has them after the series."""
    for rel in touched:
        target = new_tree / rel
        if (repo / rel).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / rel, target)
        elif target.is_file():
            target.unlink()


# --- the checks ------------------------------------------------------------------------------------------


def check_switches(switches: Mapping[str, SwitchMapping], declared: frozenset[str],
                   base_declared: frozenset[str], base_version: str) -> list[SwitchResult]:
    results = []
    for switch in sorted(switches, key=SWITCHES.index):
        mapping = switches[switch]
        if mapping is False:
            results.append(SwitchResult(switch=switch, mapping=mapping, status="absent",
                                        detail="(the revision has no such thing)"))
        elif isinstance(mapping, str) and mapping.startswith("-"):
            results.append(SwitchResult(switch=switch, mapping=mapping, status="flag",
                                        detail="(a compiler flag: not a CMake name)"))
        elif mapping in declared:
            results.append(SwitchResult(switch=switch, mapping=mapping, status="declared"))
        else:
            close = difflib.get_close_matches(str(mapping), sorted(declared), n=3, cutoff=0.6)
            was = f"declared at {base_version}, gone here" if mapping in base_declared else "never declared"
            hint = f"; did you mean {' or '.join(close)}? (pin add --switch {switch}=NAME)" if close else \
                "; map it to the new name with --switch, or to false"
            results.append(SwitchResult(switch=switch, mapping=mapping, status="missing",
                                        detail=f"is not declared ({was}){hint}"))
    return results


def check_targets(config: Config, pin: Pin, declared: frozenset[str]) -> list[TargetResult]:
    """Every target planned at ``pin`` (which ``config`` holds) and checked against ``declared``."""
    required = set(pin.targets or (config.default_target,))
    results = []
    for name in sorted(config.targets):
        problem = None
        try:
            [job] = plan(config, [name], pin.name)
            job.check_against(declared)
        except ConfigError as exc:
            problem = str(exc)
        results.append(TargetResult(target=name, required=name in required, problem=problem))
    return results


def variant_lines(base_cmake: str | None, new_cmake: str | None, base_version: str,
                  version: str, *, detail: bool = True) -> list[str]:
    """ggml's declared CPU variants at both releases, and what changed (added, removed, other flags; with
    ``detail``, how each changed variant differs)."""
    try:
        base = oracle.declared_cmake_variants(base_cmake or "")
        new = oracle.declared_cmake_variants(new_cmake or "")
        arm_base = sorted(oracle.declared_arm_variants(base_cmake or ""))
        arm_new = sorted(oracle.declared_arm_variants(new_cmake or ""))
    except oracle.OracleError as exc:
        return [f"cannot read them: {exc}"]
    lines = [f"Linux ARM at {version}: {', '.join(arm_new) or '(none: no ARM variant dispatch)'}"]
    if base_version == version:
        return [*lines, f"all: {len(new)} declared"]
    if arm_base != arm_new:
        lines.append(f"Linux ARM at {base_version}: {', '.join(arm_base) or '(none)'}")
    added = sorted(set(new) - set(base))
    removed = sorted(set(base) - set(new))
    changed = sorted(n for n in set(new) & set(base) if new[n] != base[n])
    lines.append(f"{base_version} -> {version}: {len(base)} -> {len(new)} declared; added: "
                 f"{', '.join(added) or 'none'}; removed: {', '.join(removed) or 'none'}; "
                 f"changed: {', '.join(changed) or 'none'}")
    for name in changed if detail else ():
        (old_tokens, old_where), (new_tokens, new_where) = base[name], new[name]
        if old_tokens != new_tokens:
            lines.append(f"  {name}: {' '.join(old_tokens)} -> {' '.join(new_tokens)}")
        if old_where != new_where:
            lines.append(f"  {name}: declared under {' / '.join(new_where)} (was {' / '.join(old_where)})")
    return lines


@dataclass
class _Sources:
    """Each sdist unpacked (only what the checks read) once per run, in one temp directory."""

    cache: Cache
    root: Path
    trees: dict[tuple[str, str], Path] = field(default_factory=dict)

    def tree(self, pin: Pin, touched: set[str]) -> Path:
        key = (pin.sdist_sha256, ",".join(sorted(touched)))
        if key not in self.trees:
            self.trees[key] = _extract(fetch_sdist(pin, self.cache), pin.version,
                                       self.root / f"tree-{len(self.trees)}", touched)
        return self.trees[key]

    def copy(self, tree: Path) -> Path:
        dest = self.root / f"copy-{len(list(self.root.iterdir()))}"
        shutil.copytree(tree, dest, symlinks=True)
        return dest


@contextmanager
def _sources(cache: Cache) -> Iterator[_Sources]:
    with tempfile.TemporaryDirectory(prefix="llama-wheels-pin-") as tmp:
        yield _Sources(cache, Path(tmp))


@dataclass(frozen=True, kw_only=True)
class TreeFacts:
    """What the checks read from a pin's source with its patch series applied."""

    pin: Pin
    declared: frozenset[str]  # option()/CACHE names
    ggml: str | None  # ggml/src/CMakeLists.txt (None: the file is not there)
    repack: tuple[str, ...] | None = None  # the types ggml repacks (None: no repack source found)

    @classmethod
    def read(cls, pin: Pin, tree: Path) -> TreeFacts:
        ggml = tree / GGML_CMAKE
        return cls(pin=pin, declared=declared_cmake_options(tree),
                   ggml=ggml.read_text(encoding="utf-8", errors="replace") if ggml.is_file() else None,
                   repack=repacked_types(tree))


def repacked_types(tree: Path) -> tuple[str, ...] | None:
    """The weight types ggml's ``*get_optimal_repack_type`` gives a repacked layout, in its order."""
    for rel in GGML_REPACK:
        if (tree / rel).is_file():
            body = _REPACK_FUNCTION.search((tree / rel).read_text(encoding="utf-8", errors="replace"))
            if body is not None:
                return tuple(dict.fromkeys(_REPACK_TYPE.findall(body.group(1))))
    return None


def repack_lines(base: TreeFacts, new: TreeFacts) -> list[str]:
    if new.repack is None:
        return [f"no get_optimal_repack_type found at {new.pin.version}"]
    lines = [f"at {new.pin.version}: {', '.join(new.repack) or 'none'}"]
    if base.pin.version != new.pin.version and base.repack is not None and base.repack != new.repack:
        gone = [t for t in base.repack if t not in new.repack]
        added = [t for t in new.repack if t not in base.repack]
        lines.append(f"{base.pin.version} -> {new.pin.version}: added {', '.join(added) or 'none'}; no longer "
                     f"repacked {', '.join(gone) or 'none'} (the wheel suite judges this pin's wheels by "
                     "oracle.py's REPACK_RULES: check they agree)")
    return lines


def examine(config: Config, pin: Pin, patch_base: Pin, patches: Sequence[Path], sources: _Sources,
            scratch: Path, *, compare: TreeFacts | None = None,
            variant_detail: bool = True) -> tuple[PinReport, TreeFacts, TreeFacts]:
    """Every check of ``pin`` (which ``config`` holds): its series ``patches`` carried from ``patch_base``'s
    tree, switch renames and variants against ``compare`` (default: ``patch_base`` with the series).

    Returns the report, the facts of ``pin``'s patched tree and of ``patch_base``'s.
    """
    touched = _touched(patches)
    new_tree = sources.copy(sources.tree(pin, touched))
    base_tree = sources.copy(sources.tree(patch_base, touched))
    vendored = vendored_commit(new_tree, pin.version)
    if not commit_matches(pin.llama_cpp_commit, vendored.commit):
        raise ConfigError(f"pins.{pin.name}.llama_cpp_commit is {pin.llama_cpp_commit}, but the sdist vendors "
                          f"llama.cpp@{vendored.commit} ({vendored.source}); correct build_config/pins.toml")
    results, repo = carry_patches(patches, config.root, base_tree, new_tree, scratch, patched_old=base_tree)
    _patched_tree(new_tree, repo, touched)
    facts, base_facts = TreeFacts.read(pin, new_tree), TreeFacts.read(patch_base, base_tree)
    other = compare or base_facts
    report = PinReport(
        pin=pin, patch_base=patch_base, base=other.pin, commit_source=vendored.source, patches=tuple(results),
        switches=tuple(check_switches(pin.switches, facts.declared, other.declared, other.pin.version)),
        targets=tuple(check_targets(config, pin, facts.declared)),
        variants=tuple(variant_lines(other.ggml, facts.ggml, other.pin.version, pin.version,
                                     detail=variant_detail)),
        repack=tuple(repack_lines(other, facts)),
    )
    return report, facts, base_facts


# --- pin check -------------------------------------------------------------------------------------------


def check_pins(config: Config, names: Sequence[str], cache: Cache) -> list[PinReport]:
    """The committed pins' checks: each pin's own series on its own source; switch history and variants
    compared with the default pin (patched too). Offline once their sdists are cached."""
    reports: dict[str, PinReport] = {}
    default: TreeFacts | None = None
    with _sources(cache) as sources:
        for name in [config.default_pin, *(n for n in names if n != config.default_pin)]:
            pin = config.pin(name)
            patches = [config.patches_dir / pin.version / p for p in pin.patches]
            report, facts, _ = examine(config, pin, pin, patches, sources, sources.root / f"scratch-{name}",
                                       compare=default, variant_detail=False)
            default = default or facts
            reports[name] = report
    return [reports[name] for name in names]


# --- pin add ---------------------------------------------------------------------------------------------


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


def add_pin(config: Config, version: str, *, from_pin: str | None, name: str | None, cache: Cache,
            overrides: Mapping[str, SwitchMapping] | None = None) -> Added:
    """``pin add``: the report, and the entry + refreshed patches written if every check passed."""
    overrides = dict(overrides or {})
    base = config.pin(from_pin)
    name = name or version
    if not _PIN_NAME.match(name):
        raise UserError(f"pin name {name!r}: use letters, digits, '.', '_' and '-' (--name)")
    if name in config.pins:
        raise UserError(f"pin {name!r} exists already in build_config/pins.toml; give --name another name")
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
    patches = [new_dir / p if (new_dir / p).is_file() else config.patches_dir / base.version / p
               for p in base.patches]
    with _sources(cache) as sources:
        vendored = vendored_commit(sources.tree(provisional, _touched(patches)), version)
        pin = dataclasses.replace(provisional, llama_cpp_commit=vendored.commit)
        trial = dataclasses.replace(config, pins={**config.pins, name: pin})
        report, _, _ = examine(trial, pin, base, patches, sources, sources.root / "scratch")
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


def summary_error(report: PinReport, what: str) -> PatchError | ConfigError:
    """The one-line error a failed check ends with (exit code 2)."""
    problems = report.problems
    first = problems[0] + (f" (and {len(problems) - 1} more, above)" if len(problems) > 1 else "")
    kind = PatchError if any(not p.ok for p in report.patches) else ConfigError
    return kind(f"{what}: {first}")
