"""The checks of a pin's patched source: each switch's CMake name against the tree's option()/CACHE declarations,
every target planned at the pin, ggml's declared CPU variants, the weight types ggml repacks, and how the new
release changes what the oracle expects of its wheels."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llama_wheels import oracle
from llama_wheels.config import SWITCHES, Config, Pin, SwitchMapping
from llama_wheels.core.errors import ConfigError
from llama_wheels.pins.report import SwitchResult, TargetResult
from llama_wheels.pins.sources import GGML_CMAKE, GGML_REPACK
from llama_wheels.plan import plan
from llama_wheels.stages.patching import declared_cmake_options

_REPACK_FUNCTION = re.compile(r"^static [^\n]*\bggml_\w*get_optimal_repack_type\([^\n]*\{\n(.*?)^\}", re.M | re.S)


_REPACK_TYPE = re.compile(r"\bcur->type == GGML_TYPE_(\w+)")


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


def expectation_drift(base: TreeFacts, new: TreeFacts) -> list[str]:
    """How ``new``'s sources change what the oracle expects of its wheels against ``base``'s: weight types no
    longer (or newly) repacked, with whether oracle.py already knows, and Linux ARM variants added or gone."""
    if base.pin.version == new.pin.version:
        return []
    drift = []
    if base.repack is not None and new.repack is not None:
        for ggml_type in (t for t in base.repack if t not in new.repack):
            expected = ggml_type in oracle.REPACK_RULES and oracle.type_rules(ggml_type, version=new.pin.version)
            drift.append(f"{ggml_type} no longer repacked" + (
                f" but oracle.py still expects it at {new.pin.version}: its wheel suite fails until REPACKED_SINCE "
                "says so" if expected else " (oracle.py knows)"))
        for ggml_type in (t for t in new.repack if t not in base.repack):
            known = ggml_type in oracle.REPACK_RULES and oracle.type_rules(ggml_type, version=new.pin.version)
            drift.append(f"{ggml_type} newly repacked" + ("" if known else
                         " but oracle.py has no rule for it: add its branches to REPACK_RULES"))
    try:
        arm_base = oracle.declared_arm_variants(base.ggml or "")
        arm_new = oracle.declared_arm_variants(new.ggml or "")
    except oracle.OracleError:
        return drift  # variant_lines says why
    added, gone = sorted(set(arm_new) - set(arm_base)), sorted(set(arm_base) - set(arm_new))
    if added or gone:
        drift.append(f"Linux ARM variants added: {', '.join(added) or 'none'}, gone: {', '.join(gone) or 'none'}")
    return drift
