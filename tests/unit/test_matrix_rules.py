"""The expectations of the emulated matrix, derived from CPU features and the pinned source."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_wheels.config.cpus import load_cpus
from llama_wheels.core.errors import UserError
from llama_wheels.judges.matrix import WheelBuild, expect
from tests.support.checkout import REPO, pinned


def test_fixed_isa_wheel_is_unsupported_without_its_features() -> None:
    cpus = load_cpus(REPO)
    wheel = WheelBuild(path=Path("w.whl"), version=pinned().version, fixed_isa="armv8.2-a+dotprod", variants=())
    assert expect(wheel, cpus["cortex-a53"], {}).missing == ("dotprod",)
    assert not expect(wheel, cpus["a64fx"], {}).supported
    on_n1 = expect(wheel, cpus["neoverse-n1"], {})
    assert on_n1.supported and on_n1.q4_0_layout == "q4_0_4x4"
    assert expect(wheel, cpus["max"], {}).q4_0_layout == "q4_0_4x4"  # built without i8mm: dotprod kernel


def test_a_wheel_the_oracle_cannot_judge_is_a_user_error() -> None:
    """A dispatch wheel checked against no declared variants (wrong pin, unreadable source): one line."""
    wheel = WheelBuild(path=Path("w.whl"), version=pinned().version, fixed_isa=None, variants=("armv8.0_1",))
    with pytest.raises(UserError, match=r"^w.whl on neoverse-n1: the pinned source declares no CPU variant"):
        expect(wheel, load_cpus(REPO)["neoverse-n1"], {})

