"""The ISA classifier (binaries/isa.py) on code the pinned zig assembles and links here: one instruction per
feature, every one decoded and classified; the runtime-guarded table against the pinned zig's runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llama_wheels.binaries import isa
from llama_wheels.binaries.audit import audit_library
from llama_wheels.oracle import instruction_features, variant_march
from tests.support.zig import zig_env

# One instruction of each feature, and what it must be classified as (empty: armv8-a).
PROBE = (
    ("add x0, x1, x2", set()), ("fadd s0, s1, s2", set()), ("fmla v0.4s, v1.4s, v2.4s", set()),
    ("fcvt h0, s0", set()), ("ldr h0, [x0]", set()), ("fcvtl v0.4s, v1.4h", set()), ("dup v0.8h, w0", set()),
    ("ldxr w0, [x1]", set()), ("paciasp", set()), ("bti c", set()),  # hint space: a NOP before armv8.3/8.5
    ("sdot v0.4s, v1.16b, v2.16b", {"dotprod"}), ("udot v0.4s, v1.16b, v2.4b[1]", {"dotprod"}),
    ("smmla v0.4s, v1.16b, v2.16b", {"i8mm"}), ("ummla v0.4s, v1.16b, v2.16b", {"i8mm"}),
    ("usmmla v0.4s, v1.16b, v2.16b", {"i8mm"}), ("usdot v0.4s, v1.16b, v2.16b", {"i8mm"}),
    ("sudot v0.4s, v1.16b, v2.4b[0]", {"i8mm"}),
    ("bfdot v0.4s, v1.8h, v2.8h", {"bf16"}), ("bfmmla v0.4s, v1.8h, v2.8h", {"bf16"}), ("bfcvt h0, s1", {"bf16"}),
    ("fadd h0, h1, h2", {"fp16"}), ("fmla v0.8h, v1.8h, v2.8h", {"fp16"}), ("fmov h0, w0", {"fp16"}),
    ("ld1b {z0.b}, p0/z, [x0]", {"sve"}), ("sdot z0.s, z1.b, z2.b", {"sve"}), ("cntd x0", {"sve"}),
    ("sqrdmlah z0.s, z1.s, z2.s", {"sve2"}), ("eor3 z0.d, z0.d, z1.d, z2.d", {"sve2"}),
    ("smmla z0.s, z1.b, z2.b", {"sve", "i8mm"}),
    ("smstart", {"sme"}), ("smstop za", {"sme"}), ("fmopa za0.s, p0/m, p1/m, z0.s, z1.s", {"sme"}),
    ("mrs x0, tpidr2_el0", {"sme"}),
    ("ldadd w0, w1, [x2]", {"lse"}), ("cas w0, w1, [x2]", {"lse"}), ("crc32b w0, w1, w2", {"crc"}),
    ("ldapr w0, [x1]", {"rcpc"}), ("aese v0.16b, v1.16b", {"aes"}), ("sha256h q0, q1, v2.4s", {"sha2"}),
    ("sqrdmlah v0.4s, v1.4s, v2.4s", {"rdm"}), ("stg x8, [x8]", {"mte"}),
)


MARCH = "generic+v9_2a+sme+i8mm+bf16+fullfp16+sve2+aes+sha2+mte"  # zig's -mcpu for armv9.2-a+sme+...


def assemble(tmp_path: Path, lines: list[str]) -> isa.CodeObject:
    source = tmp_path / "probe.s"
    source.write_text(".text\n.globl probe\n.type probe, %function\nprobe:\n" + "".join(f"  {x}\n" for x in lines)
                      + ".size probe, .-probe\n")
    obj = tmp_path / "probe.o"
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-linux-gnu", f"-mcpu={MARCH}", "-c",
                    str(source), "-o", str(obj)], check=True, capture_output=True, env=zig_env(), timeout=600)
    return isa.elf_code("probe.o", obj.read_bytes())


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> isa.CodeObject:
    return assemble(tmp_path_factory.mktemp("isa"), [line for line, _ in PROBE])


def test_every_probe_instruction_is_decoded_and_classified(probe: isa.CodeObject) -> None:
    [text] = [s for s in probe.sections if s.name == ".text"]
    assert len(text.words) == len(PROBE)
    decoded = isa.decode_words(text.words.tolist())
    got = [(decoded[w].text, set(decoded[w].features)) for w in text.words.tolist()]
    wrong = [(line, want, have) for (line, want), (have_text, have) in zip(PROBE, got, strict=True) if want != have]
    assert not wrong, wrong
    assert all(not t.startswith(".inst") for t, _ in got)


def test_counts_and_sites_of_the_probe(probe: isa.CodeObject) -> None:
    counts, total = isa.feature_counts(probe)
    assert total == len(PROBE)
    assert counts["i8mm"] == 6 and counts["sme"] == 4 and counts["dotprod"] == 2
    sites = isa.sites_needing(probe, frozenset({"dotprod"}))
    assert [(s.instruction.mnemonic, s.index) for s in sites] == [("sdot", 10), ("udot", 11)]
    assert sites[0].offset == probe.sections[0].offset + 40
    assert isa.enclosing_symbol(probe, sites[0].address) == "probe+0x28"


def test_baseline_library_fails_on_every_feature_and_excuses_nothing(probe: isa.CodeObject) -> None:
    """An SVE `cntd x0` outside the recognized libunwind functions is a violation: no blanket excuse."""
    audit = audit_library(probe, "baseline armv8-a", instruction_features("armv8-a"))
    assert not audit.excused
    assert len(audit.violations) == sum(1 for _, want in PROBE if want)
    assert any(v.instruction == "cntd x0" and v.features == ("sve",) for v in audit.violations)


def test_allowed_features_leave_only_the_rest(probe: isa.CodeObject) -> None:
    allowed = instruction_features("armv9.2-a+sme") | {"aes", "sha2", "mte"}
    assert not audit_library(probe, "everything", allowed).violations
    audit = audit_library(probe, "v8.6", instruction_features("armv8.6-a+sve"))
    assert {f for v in audit.violations for f in v.features} == {"sve2", "sme", "aes", "sha2", "mte"}


def test_architecture_levels() -> None:
    assert instruction_features("armv8-a") == frozenset()
    assert instruction_features("armv8.2-a+dotprod") == {"lse", "crc", "rdm", "dotprod"}
    assert "fp16" not in instruction_features("armv8.2-a")  # FEAT_FP16 is optional in armv8.2-a
    assert {"dotprod", "rcpc"} <= instruction_features("armv8.4-a")
    assert {"i8mm", "bf16"} <= instruction_features("armv8.6-a")
    assert {"sve", "sve2"} <= instruction_features("armv9-a") and "i8mm" not in instruction_features("armv9-a")
    assert {"i8mm", "sve2"} <= instruction_features("armv9.2-a")
    assert instruction_features(variant_march("armv8.2_1", ["DOTPROD"])) == {"lse", "crc", "rdm", "dotprod"}
    # ggml's apple_m4 (DOTPROD MATMUL_INT8 NOSVE SME): armv9.2-a without SVE or SVE2, with SME
    m4 = instruction_features(variant_march("apple_m4", ["DOTPROD", "MATMUL_INT8", "NOSVE", "SME"]))
    assert {"i8mm", "sme", "dotprod", "fp16"} <= m4 and not {"sve", "sve2"} & m4
    for bad in ("armv8.2", "x86-64-v3", "armv7-a"):
        with pytest.raises(ValueError, match="not an AArch64 -march"):
            instruction_features(bad)


def test_a_word_capstone_cannot_decode_is_never_allowed(tmp_path: Path) -> None:
    """An encoding newer than the disassembler (or data in a code section) fails the audit: it is not baseline."""
    code = assemble(tmp_path, ["add x0, x1, x2", ".inst 0xffffffff"])
    audit = audit_library(code, "everything", instruction_features("armv9.3-a+sme"))
    [violation] = audit.violations
    assert violation.features == (isa.UNDECODED,) and violation.instruction == ".inst 0xffffffff"

