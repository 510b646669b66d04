"""The parser that cross-checks the oracle's repack table (tests/support/repack_source.py) on small texts written
here; its run against each pin's real source is tests/integration/network/test_repack_rules.py."""

from __future__ import annotations

import pytest

from llama_wheels.oracle import RepackRule
from tests.support.repack_source import ShapeError, SourceRule, differences, parse_repack_function

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

