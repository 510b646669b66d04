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



def test_the_guest_finds_the_standalone_modules_this_package_imports() -> None:
    """By import, not by a path string: the files are the modules ``llama_wheels`` itself loads."""
    from llama_wheels import oracle
    from llama_wheels.judges.matrix import standalone_env
    from llama_wheels.standalone import hostcpu, models

    assert standalone_env(Path("/models")) == {
        "LLAMA_WHEELS_MODELS_PY": models.__file__, "LLAMA_WHEELS_ORACLE_PY": oracle.__file__,
        "LLAMA_WHEELS_HOSTCPU_PY": hostcpu.__file__, "LLAMA_WHEELS_MODEL_CACHE": "/models"}
