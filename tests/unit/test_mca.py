"""Estimated cycles (benchmarks/counting/mca.py) on blocks whose cycles are known by hand, with the pinned
LLVM (build_config/mca.toml; scripts/bootstrap.sh installs it): choosing the hot blocks, disassembling a
block's bytes, pricing it, and the gates: a block llvm-mc cannot decode or llvm-mca refuses stays unpriced,
the wrong LLVM is refused, a broken mca.toml is named."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest

from benchmarks.counting import mca
from benchmarks.counting.insn_count import Block
from llama_wheels.config.mca_spec import McaSpec, load_mca_spec
from llama_wheels.core.errors import ConfigError, ToolchainError
from tests.support.checkout import REPO

SDOT = 0x4E829420  # sdot v0.4s, v1.16b, v2.16b
SMMLA_V16 = 0x4E82A430  # smmla v16.4s, v1.16b, v2.16b
SUBS = 0xF1000400  # subs x0, x0, #1
UNDECODABLE = 0xFFFFFFFF
MOV_X1_X30 = 0xAA1E03E1  # mov x1, x30 (reads the link register)
BL_FORWARD = 0x94000100  # bl .+1024


def b_ne_back(n_insns: int) -> int:
    """b.ne to ``n_insns`` instructions back (the loop branch)."""
    return 0x54000000 | ((-n_insns & 0x7FFFF) << 5) | 0x1


def block_file(tmp_path: Path, name: str, words: list[int]) -> Block:
    path = tmp_path / name
    path.write_bytes(b"\0" * 16 + struct.pack(f"<{len(words)}I", *words))  # the block at a non-zero offset
    return Block(str(path), 16, len(words))


@pytest.fixture(scope="module")
def spec() -> McaSpec:
    s = load_mca_spec(REPO)
    mca.check_llvm(s)
    return s


def test_hot_blocks_are_the_fewest_that_hold_95_percent() -> None:
    a, b, c = Block("/x", 0, 10), Block("/x", 40, 5), Block("/y", 0, 1)
    assert mca.hot_blocks({a: 90, b: 1, c: 100}) == [a, c]  # 900 + 100 of 1005 instructions
    assert mca.hot_blocks({a: 1, b: 2}) == [a, b]  # 10 + 10: equal shares, by place


def test_a_dependent_sdot_chain_costs_its_latency_and_smmla_its_throughput(spec: McaSpec, tmp_path: Path) -> None:
    chain = block_file(tmp_path, "chain", [SDOT] * 32 + [SUBS, b_ne_back(33)])
    stream_words = [SMMLA_V16 + i for i in range(16)] * 2  # smmla v16..v31: independent accumulators
    stream = block_file(tmp_path, "stream", [*stream_words, SUBS, b_ne_back(33)])
    prices = mca.Pricer(spec=spec, models=("neoverse-n2", "neoverse-v2")).prepare([{chain: 1000, stream: 1000}])
    assert prices["neoverse-n2"][chain] == pytest.approx(32 * 3, rel=0.05)
    assert prices["neoverse-n2"][stream] == pytest.approx(32 / 2, rel=0.05)
    assert prices["neoverse-v2"][chain] == pytest.approx(32 * 1, rel=0.05)  # accumulator forwarding
    assert prices["neoverse-v2"][stream] == pytest.approx(32 / 4, rel=0.05)
    est = mca.Pricer.estimate({chain: 1000}, prices["neoverse-n2"])
    assert est.covered == 1.0 and est.cycles == pytest.approx(96_000, rel=0.05) and est.instructions == 34_000


def test_a_block_llvm_cannot_decode_stays_unpriced_and_the_rest_is_scaled(spec: McaSpec, tmp_path: Path) -> None:
    good = block_file(tmp_path, "good", [SDOT] * 32 + [SUBS, b_ne_back(33)])
    bad = block_file(tmp_path, "bad", [SDOT, UNDECODABLE, SUBS])
    prices = mca.Pricer(spec=spec, models=("neoverse-n2",)).prepare([{good: 100, bad: 1000}])
    assert bad not in prices["neoverse-n2"] and good in prices["neoverse-n2"]
    est = mca.Pricer.estimate({good: 100, bad: 1000}, prices["neoverse-n2"])
    assert est.covered == pytest.approx(3400 / 6400, rel=1e-3)
    # the unpriced 3000 instructions at the priced block's cycles per instruction
    assert est.cycles == pytest.approx(100 * 96 * 6400 / 3400, rel=0.05)


def test_an_instruction_the_model_cpu_lacks_drops_only_its_block(spec: McaSpec, tmp_path: Path) -> None:
    sve2 = 0x04A27020  # sqdmulh z0.s, z1.s, z2.s: SVE2 (neoverse-v1 has SVE, not SVE2)
    good = block_file(tmp_path, "good", [SDOT] * 4 + [SUBS, b_ne_back(5)])
    asm = mca.disassemble(spec, {"good": mca.block_bytes(good) or b"", "sve2": struct.pack("<I", sve2)})
    assert set(asm) == {"good", "sve2"}
    priced = mca.price(spec, "neoverse-v1", asm)
    assert set(priced) == {"good"}, priced


def test_a_call_is_priced_at_the_pinned_call_latency(spec: McaSpec, tmp_path: Path) -> None:
    """Each pass reads the link register the previous pass's call wrote: the call's latency is the block's
    critical path, so the pinned call_latency (not llvm-mca's default of 100) is what the block costs."""
    block = block_file(tmp_path, "calls", [MOV_X1_X30, SUBS, BL_FORWARD])
    cheap = mca.Pricer(spec=spec, models=("neoverse-n2",)).prepare([{block: 10}])["neoverse-n2"][block]
    dear = mca.Pricer(spec=dataclasses.replace(spec, call_latency=100),
                      models=("neoverse-n2",)).prepare([{block: 10}])["neoverse-n2"][block]
    assert spec.call_latency == 1 and cheap < 2 < dear, (cheap, dear)


def test_the_wrong_llvm_is_refused(spec: McaSpec) -> None:
    with pytest.raises(ToolchainError, match=r"is not LLVM 99\.0\.0"):
        mca.check_llvm(dataclasses.replace(spec, release="99.0.0"))
    with pytest.raises(ToolchainError, match="is missing"):
        mca.check_llvm(dataclasses.replace(spec, bin=Path("/nonexistent/bin")))


def test_a_broken_mca_toml_is_named(config_root: Path) -> None:
    path = config_root / "build_config" / "mca.toml"
    text = path.read_text()
    path.write_text(text.replace('cpu = "neoverse-v1"', 'cpu = "neoverse-v9"'))
    with pytest.raises(ConfigError, match=r"models.neoverse-v1\].cpu: 'neoverse-v9' is no class"):
        load_mca_spec(config_root, ("neoverse-n2", "neoverse-v1"))
    path.write_text(text.replace("iterations = 100", "iterations = 1"))
    with pytest.raises(ConfigError, match="iterations: 1 is outside"):
        load_mca_spec(config_root)
    path.write_text(text.replace("call_latency = 1", "call_latency = 0"))
    with pytest.raises(ConfigError, match="call_latency: 0 is outside"):
        load_mca_spec(config_root)
    path.write_text(text.replace('features_of = "neoverse-n2"', 'features_of = "neoverse-n9"'))
    with pytest.raises(ConfigError, match=r"models.neoverse-v2\].features_of: 'neoverse-n9' is no class"):
        load_mca_spec(config_root, ("neoverse-n2", "neoverse-v1"))
    path.write_text(text.replace('qemu_cpu = "max,sve128=on,sme=off"', 'qemu_cpu = "max sve128"'))
    with pytest.raises(ConfigError, match=r"models.neoverse-v2\].qemu_cpu.*a qemu -cpu value"):
        load_mca_spec(config_root)
    path.write_text(text.replace('features_of = "neoverse-n2"', 'cpu = "neoverse-n2"'))
    with pytest.raises(ConfigError, match=r"models.neoverse-v2\]: give either cpu .* or qemu_cpu and features_of"):
        load_mca_spec(config_root)
