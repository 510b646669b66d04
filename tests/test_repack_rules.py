"""The oracle's repack table (``oracle.REPACK_RULES``) against each pin's ``ggml_*_get_optimal_repack_type``.

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

import dataclasses
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from llama_wheels import oracle
from llama_wheels.config import load
from llama_wheels.core.cache import Cache
from llama_wheels.oracle import RepackRule
from llama_wheels.stages.fetch import fetch_sdist
from llama_wheels.stages.patching import prepare

from .conftest import REPO

GGML_CPU = "vendor/llama.cpp/ggml/src/ggml-cpu"
# The file that holds the function, per generation (oracle.GENERATIONS).
SOURCE_FILES = {"repack": f"{GGML_CPU}/repack.cpp", "aarch64": f"{GGML_CPU}/ggml-cpu-aarch64.cpp"}

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
ENUM_TYPE = re.compile(r"^\s*GGML_TYPE_(\w+)\s*=\s*\d+\s*,", re.MULTILINE)


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
                             "tests/test_repack_rules.py (and the oracle) what it means")
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


# --- the parser on small texts (fast tier) ----------------------------------------------------------------

SMALL = """\
static const tensor_traits<block_q4_0, 8, 4> q4_0_4x8;   // 0.3.4's form: no PARAM_TYPE, at namespace scope
static const ggml::cpu::tensor_traits * ggml_x_get_optimal_repack_type(const struct ggml_tensor * cur) {
    static const ggml::cpu::repack::tensor_traits<block_q4_K, 4, 8, GGML_TYPE_Q8_K> q4_K_8x4;
    if (cur->type == GGML_TYPE_Q4_0) {
        if (ggml_cpu_has_avx2() || (ggml_cpu_has_sve() && ggml_cpu_get_sve_cnt() == QK8_0)) {
            if (cur->ne[1] % 4 == 0) {
                return &ggml::cpu::aarch64::q4_0_4x8;
            }
        }
        if (ggml_cpu_has_riscv_v()) {
            switch (__riscv_vlenb()) { case 256: { return nullptr; } }
        }
    } else if (cur->type == GGML_TYPE_Q4_K) {
        if (ggml_cpu_has_neon() && ggml_cpu_has_dotprod()) {
            if (cur->ne[1] % 8 == 0) { return &q4_K_8x4; }
        }
    }
    return nullptr;
}
"""


def test_the_parser_reads_ggmls_shape() -> None:
    assert parse_repack_function(SMALL) == [
        SourceRule(ggml_type="Q4_0", layout="q4_0_4x8", arch="x86", needs=frozenset({"avx2"}), sve_bits=None,
                   rows=4),
        SourceRule(ggml_type="Q4_0", layout="q4_0_4x8", arch="arm", needs=frozenset({"sve"}), sve_bits=256,
                   rows=4),
        # NB_COLS first, as ggml logs it: tensor_traits<block_q4_K, 4, 8> is q4_K_8x4.
        SourceRule(ggml_type="Q4_K", layout="q4_K_8x4", arch="arm", needs=frozenset({"dotprod"}), sve_bits=None,
                   rows=8),
    ]


@pytest.mark.parametrize(("old", "new", "message"), [
    ("ggml_cpu_has_dotprod()", "ggml_cpu_has_sme()", r"unknown feature test 'ggml_cpu_has_sme\(\)'"),
    ("ggml_cpu_has_dotprod()", "!ggml_cpu_has_dotprod()", r"unknown feature test '!ggml_cpu_has_dotprod\(\)'"),
    ("ggml_cpu_has_neon() &&", "ggml_cpu_has_avx2() &&", r"mixes architectures \['arm', 'x86'\]"),
    ("return &q4_K_8x4;", "return &q4_K_8x4; return nullptr;", "not one row test and one return"),
    ("return &q4_K_8x4;", "return &q4_K_8x8;", "returns q4_K_8x8, which no tensor_traits declares"),
    ("block_q4_K, 4, 8,", "block_q5_K, 4, 8,", "returns q4_K_8x4, a block_q5_K layout"),
    ("} else if (cur->type == GGML_TYPE_Q4_K)", "} if (cur->type == GGML_TYPE_Q4_K)", "not one chain"),
    ("GGML_TYPE_Q4_K)", "GGML_TYPE_Q4_0)", "not one chain"),
    ("    return nullptr;\n}", "    return &q4_K_8x4;\n}", "not return nullptr"),
    ("    if (cur->type == GGML_TYPE_Q4_0)", "    int x = 0;\n    if (cur->type == GGML_TYPE_Q4_0)",
     "before the first type test: 'int x = 0;'"),
    ("ggml_x_get", "ggml_x_find", "0 definitions"),
])
def test_the_parser_fails_on_what_it_does_not_read(old: str, new: str, message: str) -> None:
    assert old in SMALL
    with pytest.raises(ShapeError, match=message):
        parse_repack_function(SMALL.replace(old, new, 1))


def test_differences_show_each_changed_branch() -> None:
    source = parse_repack_function(SMALL)
    table = {"Q4_0": (RepackRule(layout="q4_0_4x8", arch="x86", needs=frozenset({"avx2"})),
                      RepackRule(layout="q4_0_4x8", arch="arm", needs=frozenset({"sve"}), sve_bits=256)),
             "Q4_K": (RepackRule(layout="q4_K_8x4", arch="arm", needs=frozenset({"dotprod"})),),
             "Q8_0": (RepackRule(layout="q8_0_4x4", arch="arm", needs=frozenset({"dotprod"}),
                                 generations=frozenset({"repack"})),)}
    assert differences(table, source, "aarch64") == []  # Q8_0's rule is not of this generation
    diff = differences(table, source, "repack")
    assert diff[-1] == "-Q8_0 arm q8_0_4x4 needs dotprod rows%4"


# --- the pinned sources (network: the pins' sdists, cached) -----------------------------------------------

PINS = tuple(load(REPO).pins)


@dataclass(frozen=True)
class PinnedSource:
    generation: str
    text: str  # the file that holds ggml_*_get_optimal_repack_type
    tree: Path


@pytest.fixture(scope="module")
def sources(cache: Cache) -> dict[str, PinnedSource]:
    config = load(REPO)
    out = {}
    for name in PINS:
        pin = config.pin(name)
        tree = prepare(pin, fetch_sdist(pin, cache), config.patches_dir, cache).tree
        present = [g for g, path in SOURCE_FILES.items() if (tree / path).is_file()]
        assert len(present) == 1, f"pin {name}: expected one of {sorted(SOURCE_FILES.values())}, found {present}"
        out[name] = PinnedSource(generation=present[0], text=(tree / SOURCE_FILES[present[0]]).read_text(), tree=tree)
    return out


@pytest.mark.network
@pytest.mark.parametrize("pin", PINS)
def test_the_table_is_the_pinned_sources(sources: dict[str, PinnedSource], pin: str) -> None:
    source = sources[pin]
    common = (source.tree / "vendor/llama.cpp/ggml/src/ggml-common.h").read_text()
    assert re.search(rf"^#define QK8_0 {CONSTANTS['QK8_0']}\b", common, re.MULTILINE)
    diff = differences(oracle.REPACK_RULES, parse_repack_function(source.text), source.generation)
    assert not diff, f"pin {pin}: oracle.REPACK_RULES differs from the pinned source:\n" + "\n".join(diff)


@pytest.mark.network
def test_the_pins_generations_and_ggml_types(sources: dict[str, PinnedSource]) -> None:
    """Every pin's source has one of the oracle's repack generations, one per release (pins that share a
    version, with other patch series, share it); the default pin's is the newest."""
    config = load(REPO)
    generations = {name: s.generation for name, s in sources.items()}
    assert set(generations) == set(config.pins) and set(generations.values()) <= set(oracle.GENERATIONS)
    assert generations[config.default_pin] == oracle.GENERATIONS[0]
    per_release: dict[str, set[str]] = {}
    for name, generation in generations.items():
        per_release.setdefault(config.pin(name).version, set()).add(generation)
    assert all(len(g) == 1 for g in per_release.values()), per_release
    enums = {}
    for name, s in sources.items():
        ggml_h = COMMENT.sub("", (s.tree / "vendor/llama.cpp/ggml/include/ggml.h").read_text())
        enum = ggml_h[ggml_h.index("enum ggml_type {"):]
        enums[name] = [t for t in ENUM_TYPE.findall(enum[:enum.index("};")]) if t != "COUNT"]
    assert enums[config.default_pin] == list(oracle.GGML_TYPES)
    assert config.pin(None).version == oracle.TYPES_RELEASE  # the release whose wheels must bind all of them
    assert all(set(types) <= set(oracle.GGML_TYPES) for types in enums.values()), enums


def _sabotage(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"the sabotage target is not unique in the source: {old!r}"
    return text.replace(old, new)


def _branch(feature: str, rows: int, instance: str) -> str:
    return (f"        if (ggml_cpu_has_neon() && ggml_cpu_has_{feature}()) {{\n"
            f"            if (cur->ne[1] % {rows} == 0) {{\n"
            f"                return &{instance};\n"
            "            }\n        }\n")


@pytest.mark.network
@pytest.mark.parametrize(("case", "expect"), [
    # Order is what ggml tries first: the same rules, the dotprod one now ahead of the i8mm one.
    ("swap Q4_K's i8mm and dotprod branches", ["+Q4_K arm q4_K_8x4 needs dotprod rows%8",
                                              "-Q4_K arm q4_K_8x4 needs dotprod rows%8"]),
    ("Q6_K's 8x4 on rows % 4", ["-Q6_K arm q6_K_8x4 needs dotprod rows%8", "+Q6_K arm q6_K_8x4 needs dotprod rows%4"]),
    ("a Q3_K type", ["+Q3_K arm q3_K_8x4 needs dotprod rows%8"]),
    ("MXFP4 needs i8mm", ["-MXFP4 arm mxfp4_4x4 needs dotprod rows%4", "+MXFP4 arm mxfp4_4x4 needs i8mm rows%4"]),
    ("the SVE kernel on 512 bits", ["-Q4_0 arm q4_0_8x8 needs i8mm+sve sve=256 rows%8",
                                    "+Q4_0 arm q4_0_8x8 needs i8mm+sve sve=512 rows%8"]),
    ("Q5_K's 8x8 declared with NB_COLS 4", ["-Q5_K arm q5_K_8x8 needs i8mm rows%8",
                                            "+Q5_K arm q5_K_4x8 needs i8mm rows%8"]),
])
def test_a_sabotaged_source_fails(sources: dict[str, PinnedSource], case: str, expect: list[str]) -> None:
    text = sources["current"].text
    sabotaged = {
        "swap Q4_K's i8mm and dotprod branches": lambda: _sabotage(
            text, _branch("matmul_int8", 8, "q4_K_8x8_q8_K") + _branch("dotprod", 8, "q4_K_8x4_q8_K"),
            _branch("dotprod", 8, "q4_K_8x4_q8_K") + _branch("matmul_int8", 8, "q4_K_8x8_q8_K")),
        "Q6_K's 8x4 on rows % 4": lambda: _sabotage(
            text, _branch("dotprod", 8, "q6_K_8x4_q8_K"), _branch("dotprod", 4, "q6_K_8x4_q8_K")),
        "a Q3_K type": lambda: _sabotage(_sabotage(
            text, "    } else if (cur->type == GGML_TYPE_Q1_0) {",
            "    } else if (cur->type == GGML_TYPE_Q3_K) {\n" + _branch("dotprod", 8, "q3_K_8x4_q8_K")
            + "    } else if (cur->type == GGML_TYPE_Q1_0) {"),
            "    // instance for Q2\n",
            "    static const ggml::cpu::repack::tensor_traits<block_q3_K, 4, 8, GGML_TYPE_Q8_K> q3_K_8x4_q8_K;\n"),
        "MXFP4 needs i8mm": lambda: _sabotage(
            text, _branch("dotprod", 4, "mxfp4_4x4_q8_0"), _branch("matmul_int8", 4, "mxfp4_4x4_q8_0")),
        "the SVE kernel on 512 bits": lambda: _sabotage(
            text, "ggml_cpu_get_sve_cnt() == QK8_0", "ggml_cpu_get_sve_cnt() == 64"),
        "Q5_K's 8x8 declared with NB_COLS 4": lambda: _sabotage(
            text, "tensor_traits<block_q5_K, 8, 8, GGML_TYPE_Q8_K> q5_K_8x8_q8_K",
            "tensor_traits<block_q5_K, 8, 4, GGML_TYPE_Q8_K> q5_K_8x8_q8_K"),
    }[case]()
    diff = differences(oracle.REPACK_RULES, parse_repack_function(sabotaged), "repack")
    changed = [line for line in diff if line[:1] in "+-" and line[:3] not in ("---", "+++")]
    assert sorted(changed) == sorted(expect), "\n".join(diff)


@pytest.mark.network
def test_a_new_feature_test_in_the_source_stops_the_parser(sources: dict[str, PinnedSource]) -> None:
    text = _sabotage(sources["current"].text, _branch("dotprod", 8, "q5_K_8x4_q8_K"),
                     _branch("sve2", 8, "q5_K_8x4_q8_K"))
    with pytest.raises(ShapeError, match=r"GGML_TYPE_Q5_K: unknown feature test 'ggml_cpu_has_sve2\(\)'"):
        parse_repack_function(text)


@pytest.mark.network
def test_the_legacy_pin_without_its_iq4_nl_branch_fails(sources: dict[str, PinnedSource]) -> None:
    text = sources["legacy"].text
    start = text.index("    } else if (cur->type == GGML_TYPE_IQ4_NL) {")
    end = text.index("    }\n\n    return nullptr;", start)
    diff = differences(oracle.REPACK_RULES, parse_repack_function(text[:start] + text[end:]), "aarch64")
    assert [line for line in diff if line.startswith("-I")] == ["-IQ4_NL arm iq4_nl_4x4 needs dotprod rows%4"]


def _replace_rule(table: Mapping[str, tuple[RepackRule, ...]], ggml_type: str, index: int,
                  **changes: object) -> dict[str, tuple[RepackRule, ...]]:
    rules = list(table[ggml_type])
    rules[index] = dataclasses.replace(rules[index], **changes)
    return {**table, ggml_type: tuple(rules)}


@pytest.mark.network
@pytest.mark.parametrize(("pin", "sabotage"), [
    ("current", lambda t: {**t, "Q6_K": t["Q6_K"][::-1]}),  # branches out of ggml's order
    ("current", lambda t: {k: v for k, v in t.items() if k != "Q1_0"}),  # a type forgotten
    ("current", lambda t: _replace_rule(t, "Q4_K", 0, needs=frozenset({"avx512"}))),
    ("current", lambda t: _replace_rule(t, "Q4_0", 1, sve_bits=None)),
    ("current", lambda t: _replace_rule(t, "Q8_0", 0, layout="q8_0_8x8")),
    ("legacy", lambda t: _replace_rule(t, "IQ4_NL", 1, generations=frozenset({"repack"}))),  # 0.3.4 has it
    ("legacy", lambda t: _replace_rule(t, "Q4_K", 2, generations=frozenset({"repack", "aarch64"}))),
])
def test_a_sabotaged_table_fails(sources: dict[str, PinnedSource], pin: str, sabotage: object) -> None:
    assert callable(sabotage)
    table = sabotage(oracle.REPACK_RULES)
    assert table != oracle.REPACK_RULES
    source = sources[pin]
    assert differences(table, parse_repack_function(source.text), source.generation)
