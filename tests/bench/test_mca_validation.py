"""Estimated cycles are checked on hand-written kernels before they are trusted on ggml's code
(benchmarks/counting/validate.py): a chain of dependent SDOTs (latency-bound) and a stream of independent
SMMLAs (throughput-bound), compiled by zig, counted block by block under the counting qemu and priced by the
pinned llvm-mca under every model of build_config/mca.toml, each within 5% of its known cycles. The gate is
fed wrong known cycles and must refuse."""

from __future__ import annotations

import pytest

from benchmarks.counting import qemu_plugin, validate
from llama_wheels.config.cpus import load_cpus
from llama_wheels.config.mca_spec import load_mca_spec
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import CommandFailed
from llama_wheels.emulation import sysroot
from tests.support.checkout import REPO


@pytest.fixture(scope="module")
def checks(cache: Cache) -> list[validate.Check]:
    spec = load_mca_spec(REPO)
    return validate.validate(spec, qemu_plugin.ensure_counting_qemu(cache), sysroot.ensure_sysroot(cache),
                             load_cpus(REPO)[validate.CPU])


def test_known_kernels_are_estimated_within_5_percent(checks: list[validate.Check]) -> None:
    assert {(c.kernel, c.model) for c in checks} == {(k, m) for k in validate.KNOWN for m in validate.KNOWN[k]}
    for c in checks:
        assert c.ok, (c.kernel, c.model, c.estimated, c.known)
        assert c.covered > 0.99  # the loop block holds nearly every instruction of its region
    validate.require(checks)
    n2_chain = next(c for c in checks if c.kernel == "sdot_chain" and c.model == "neoverse-n2")
    assert n2_chain.known == validate.PASSES * validate.OPS_PER_PASS * 3


def test_the_gate_refuses_a_method_that_misses_a_known_kernel(checks: list[validate.Check], cache: Cache) -> None:
    wrong = {k: dict(v) for k, v in validate.KNOWN.items()}
    wrong["sdot_chain"]["neoverse-n2"] = 1.0  # as if N2 forwarded the accumulator: the estimate is 3x that
    spec = load_mca_spec(REPO)
    sabotaged = validate.validate(spec, qemu_plugin.ensure_counting_qemu(cache), sysroot.ensure_sysroot(cache),
                                  load_cpus(REPO)[validate.CPU], known=wrong)
    with pytest.raises(CommandFailed, match=r"sdot_chain under neoverse-n2 estimated .* known .* off, the limit is 5%"):
        validate.require(sabotaged)
