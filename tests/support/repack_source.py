"""A parser of each pin's ``ggml_*_get_optimal_repack_type``, to check the oracle's repack table
(``oracle.REPACK_RULES``).

The table stays the readable source of truth; this small parser is the cross-check that keeps it the pin's.
It reads only the shape ggml writes that function in, and fails on anything else rather than guess:

    if (cur->type == GGML_TYPE_<T>) {                    then "} else if (cur->type == ...) {" per type
        if (<feature tests joined by && and ||>) {
            if (cur->ne[1] % <rows> == 0) {
                return &<a tensor_traits<block_<t>, INTER_SIZE, NB_COLS, ...> instance>;
            }
        }
        ...
    }
    return nullptr;

A branch whose tests are all of another architecture (RISC-V, s390x) is skipped whatever it holds. The layout
is named as ggml logs it, ``<type>_<NB_COLS>x<INTER_SIZE>``, from the instance's template arguments, not its
variable name. The source is each pin's prepared (patched) tree: the pin's sdist, downloaded once and cached
(``network``); the fast tier checks the parser itself on small texts written here.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from llama_wheels.oracle import RepackRule

# Each feature test ggml's branches use (whitespace removed) -> the architecture and the oracle features it
# asks for. ARM's are compile-time (__ARM_NEON, __ARM_FEATURE_DOTPROD, ...; ggml-cpu.c), NEON is every AArch64
# build's; x86's are __AVX2__ and __AVX512F__.
FEATURE_TESTS: Mapping[str, tuple[str, frozenset[str]]] = {
    "ggml_cpu_has_neon()": ("arm", frozenset()),
    "ggml_cpu_has_dotprod()": ("arm", frozenset({"dotprod"})),
    "ggml_cpu_has_matmul_int8()": ("arm", frozenset({"i8mm"})),
    "ggml_cpu_has_sve()": ("arm", frozenset({"sve"})),
    "ggml_cpu_has_avx2()": ("x86", frozenset({"avx2"})),
    "ggml_cpu_has_avx512()": ("x86", frozenset({"avx512"})),
    "ggml_cpu_has_vxe()": ("s390x", frozenset()),
    "ggml_cpu_has_riscv_v()": ("riscv", frozenset()),
}


# ggml_cpu_get_sve_cnt() is the SVE vector length in bytes; QK8_0 is 32 (ggml-common.h, checked below).
SVE_CNT = re.compile(r"ggml_cpu_get_sve_cnt\(\)==(\w+)")


CONSTANTS = {"QK8_0": 32}


FUNCTION = re.compile(r"\bggml_\w+_get_optimal_repack_type\s*\(\s*const\s+struct\s+ggml_tensor\s*\*\s*cur\s*\)\s*\{")


INSTANCE = re.compile(r"tensor_traits\s*<\s*block_(?P<block>\w+)\s*,\s*(?P<inter>\d+)\s*,\s*(?P<cols>\d+)\s*"
                      r"(?:,\s*\w+\s*)?>\s*(?P<name>\w+)\s*;")


DECLARATION = re.compile(r"static\s+const\s+[\w:]*" + INSTANCE.pattern)


TYPE_TEST = re.compile(r"\s*(?P<else>else\s+)?if\s*\(\s*cur->type\s*==\s*GGML_TYPE_(?P<type>\w+)\s*\)\s*\{")


BRANCH = re.compile(r"\s*if\s*\(")


ROWS_AND_RETURN = re.compile(r"\s*if\s*\(\s*cur->ne\[1\]\s*%\s*(?P<rows>\d+)\s*==\s*0\s*\)\s*\{\s*"
                             r"return\s*&\s*(?:\w+::)*(?P<name>\w+)\s*;\s*\}\s*")


COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


class ShapeError(ValueError):
    """The source is not in the shape this parser reads: a new ggml, or a sabotaged copy."""


@dataclass(frozen=True)
class SourceRule:
    """One branch of the function for one architecture (a ``||`` of two architectures gives two)."""

    ggml_type: str
    layout: str
    arch: str
    needs: frozenset[str]
    sve_bits: int | None
    rows: int  # the branch's ``cur->ne[1] % rows == 0``


def _closing(text: str, start: int) -> int:
    """The index of the bracket that closes the one at ``text[start]``."""
    pair = {"(": ")", "{": "}"}[text[start]]
    depth = 0
    for i in range(start, len(text)):
        if text[i] == text[start]:
            depth += 1
        elif text[i] == pair:
            depth -= 1
            if depth == 0:
                return i
    raise ShapeError(f"no closing {pair!r} for the {text[start]!r} at {text[start:start + 60]!r}")


def _unwrap(text: str) -> str:
    text = text.strip()
    while text.startswith("(") and _closing(text, 0) == len(text) - 1:
        text = text[1:-1].strip()
    return text


def _split(text: str, operator: str) -> list[str]:
    """``text`` split at ``operator`` outside parentheses."""
    parts, depth, last = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and text.startswith(operator, i):
            parts.append(text[last:i])
            last = i + len(operator)
    return [*parts, text[last:]]


def _conjunction(ggml_type: str, text: str) -> tuple[str, frozenset[str], int | None]:
    """The architecture, features and SVE length (bits) one ``&&`` chain of feature tests asks for."""
    arches: set[str] = set()
    needs: set[str] = set()
    sve_bits = None
    for atom in _split(_unwrap(text), "&&"):
        test = re.sub(r"\s+", "", _unwrap(atom))
        count = SVE_CNT.fullmatch(test)
        if test in FEATURE_TESTS:
            arch, features = FEATURE_TESTS[test]
            arches.add(arch)
            needs |= features
        elif count is not None and (count[1] in CONSTANTS or count[1].isdigit()):
            arches.add("arm")
            sve_bits = 8 * (int(count[1]) if count[1].isdigit() else CONSTANTS[count[1]])
        else:
            raise ShapeError(f"GGML_TYPE_{ggml_type}: unknown feature test {test!r}; tell FEATURE_TESTS in "
                             "tests/unit/test_repack_rules.py (and the oracle) what it means")
    if len(arches) != 1:
        raise ShapeError(f"GGML_TYPE_{ggml_type}: {text.strip()!r} mixes architectures {sorted(arches)}")
    return arches.pop(), frozenset(needs), sve_bits


def instances(text: str) -> dict[str, tuple[str, int, int]]:
    """Every ``tensor_traits<block_<t>, INTER_SIZE, NB_COLS[, PARAM]> name;``: name -> (t, INTER, NB_COLS)."""
    found: dict[str, tuple[str, int, int]] = {}
    for m in INSTANCE.finditer(text):
        value = (m["block"], int(m["inter"]), int(m["cols"]))
        if found.setdefault(m["name"], value) != value:
            raise ShapeError(f"{m['name']} is declared as both {found[m['name']]} and {value}")
    return found


def _branches(ggml_type: str, block: str, traits: Mapping[str, tuple[str, int, int]]) -> list[SourceRule]:
    rules, pos = [], 0
    while (opening := BRANCH.match(block, pos)) is not None:
        close = _closing(block, opening.end() - 1)
        condition = block[opening.end():close]
        brace = re.compile(r"\s*\{").match(block, close + 1)
        if brace is None:
            raise ShapeError(f"GGML_TYPE_{ggml_type}: no {{ after if ({condition.strip()})")
        end = _closing(block, brace.end() - 1)
        inner, pos = block[brace.end():end], end + 1
        ours = [c for c in (_conjunction(ggml_type, d) for d in _split(condition, "||")) if c[0] in ("arm", "x86")]
        if not ours:
            continue  # RISC-V, s390x
        shape = ROWS_AND_RETURN.fullmatch(inner)
        if shape is None:
            raise ShapeError(f"GGML_TYPE_{ggml_type}: the branch if ({condition.strip()}) holds "
                             f"{' '.join(inner.split())[:100]!r}, not one row test and one return")
        if shape["name"] not in traits:
            raise ShapeError(f"GGML_TYPE_{ggml_type}: returns {shape['name']}, which no tensor_traits declares")
        block_type, inter, cols = traits[shape["name"]]
        if block_type.lower() != ggml_type.lower():
            raise ShapeError(f"GGML_TYPE_{ggml_type}: returns {shape['name']}, a block_{block_type} layout")
        rules += [SourceRule(ggml_type=ggml_type, layout=f"{block_type}_{cols}x{inter}", arch=arch, needs=needs,
                             sve_bits=bits, rows=int(shape["rows"])) for arch, needs, bits in ours]
    if block[pos:].strip():
        raise ShapeError(f"GGML_TYPE_{ggml_type}: unexpected {' '.join(block[pos:].split())[:100]!r}")
    return rules


def parse_repack_function(text: str) -> list[SourceRule]:
    """The ARM and x86 branches of the source file's ``ggml_*_get_optimal_repack_type``, in its order."""
    found = list(FUNCTION.finditer(text))
    if len(found) != 1:
        raise ShapeError(f"{len(found)} definitions of ggml_*_get_optimal_repack_type(const struct ggml_tensor "
                         "* cur), not one: is this ggml's repack.cpp / ggml-cpu-aarch64.cpp?")
    traits = instances(text)
    tail = COMMENT.sub("", text[found[0].end() - 1:])
    body = tail[1:_closing(tail, 0)]
    first = TYPE_TEST.search(body)
    if first is None:
        raise ShapeError("the function tests no cur->type")
    prefix = re.sub(r"^\s*#.*$", "", DECLARATION.sub("", body[:first.start()]), flags=re.MULTILINE)
    if prefix.strip():
        raise ShapeError(f"before the first type test: {' '.join(prefix.split())[:100]!r}")
    rules: list[SourceRule] = []
    seen: list[str] = []
    pos = first.start()
    while (test := TYPE_TEST.match(body, pos)) is not None:
        if bool(test["else"]) != bool(seen) or test["type"] in seen:
            raise ShapeError(f"GGML_TYPE_{test['type']}: not one chain of if / else if over distinct types")
        end = _closing(body, test.end() - 1)
        rules += _branches(test["type"], body[test.end():end], traits)
        seen.append(test["type"])
        pos = end + 1
    if not re.fullmatch(r"\s*return\s+nullptr\s*;\s*", body[pos:]):
        raise ShapeError(f"after the type tests: {' '.join(body[pos:].split())[:100]!r}, not return nullptr;")
    return rules


def _line(ggml_type: str, layout: str, arch: str, needs: frozenset[str], sve_bits: int | None, rows: int) -> str:
    sve = f" sve={sve_bits}" if sve_bits is not None else ""
    return f"{ggml_type} {arch} {layout} needs {'+'.join(sorted(needs)) or '-'}{sve} rows%{rows}"


def differences(table: Mapping[str, tuple[RepackRule, ...]], source: list[SourceRule], generation: str) -> list[str]:
    """A diff of the table's branches for ``generation`` against the source's, in order; [] when equal."""
    want = [_line(t, r.layout, r.arch, r.needs, r.sve_bits, r.rows)
            for t, rules in table.items() for r in rules if generation in r.generations]
    got = [_line(s.ggml_type, s.layout, s.arch, s.needs, s.sve_bits, s.rows) for s in source]
    return list(difflib.unified_diff(want, got, f"REPACK_RULES ({generation})", "pinned source", lineterm=""))

