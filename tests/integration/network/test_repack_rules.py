"""The oracle's repack table (``oracle.REPACK_RULES``) against each pin's ``ggml_*_get_optimal_repack_type``, parsed
(tests/support/repack_source.py) from the pin's prepared tree: the pin's sdist, downloaded once and cached."""

from __future__ import annotations

import dataclasses
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
from tests.support.checkout import REPO
from tests.support.repack_source import COMMENT, CONSTANTS, ShapeError, differences, parse_repack_function

GGML_CPU = "vendor/llama.cpp/ggml/src/ggml-cpu"


# The file that holds the function, per generation (oracle.GENERATIONS).
SOURCE_FILES = {"repack": f"{GGML_CPU}/repack.cpp", "aarch64": f"{GGML_CPU}/ggml-cpu-aarch64.cpp"}


ENUM_TYPE = re.compile(r"^\s*GGML_TYPE_(\w+)\s*=\s*\d+\s*,", re.MULTILINE)


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


@pytest.mark.parametrize("pin", PINS)
def test_the_table_is_the_pinned_sources(sources: dict[str, PinnedSource], pin: str) -> None:
    source = sources[pin]
    common = (source.tree / "vendor/llama.cpp/ggml/src/ggml-common.h").read_text()
    assert re.search(rf"^#define QK8_0 {CONSTANTS['QK8_0']}\b", common, re.MULTILINE)
    diff = differences(oracle.REPACK_RULES, parse_repack_function(source.text), source.generation)
    assert not diff, f"pin {pin}: oracle.REPACK_RULES differs from the pinned source:\n" + "\n".join(diff)


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
    assert all(set(types) <= set(oracle.GGML_TYPES) for types in enums.values()), enums


def _sabotage(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"the sabotage target is not unique in the source: {old!r}"
    return text.replace(old, new)


def _branch(feature: str, rows: int, instance: str) -> str:
    return (f"        if (ggml_cpu_has_neon() && ggml_cpu_has_{feature}()) {{\n"
            f"            if (cur->ne[1] % {rows} == 0) {{\n"
            f"                return &{instance};\n"
            "            }\n        }\n")


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


def test_a_new_feature_test_in_the_source_stops_the_parser(sources: dict[str, PinnedSource]) -> None:
    text = _sabotage(sources["current"].text, _branch("dotprod", 8, "q5_K_8x4_q8_K"),
                     _branch("sve2", 8, "q5_K_8x4_q8_K"))
    with pytest.raises(ShapeError, match=r"GGML_TYPE_Q5_K: unknown feature test 'ggml_cpu_has_sve2\(\)'"):
        parse_repack_function(text)


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

