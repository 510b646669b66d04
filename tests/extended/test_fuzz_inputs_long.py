"""The bad-input fuzzing's longer search (the fixed-seed corpus is tests/unit/test_fuzz_inputs.py): the same
properties, random seeds, many more examples. A failure prints the draws that reproduce it."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import fuzz_cases
from tests.support.fuzz_cases import Inputs, make_inputs

SEARCH = settings(max_examples=600, database=None, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PROPERTIES = ("corrupt_wheel_bytes", "restructured_wheel", "mistyped_record", "mistyped_config", "corrupt_model")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    return make_inputs(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("name", PROPERTIES)
def test_long_search(name: str, inputs: Inputs, capsys: pytest.CaptureFixture[str],
                     monkeypatch: pytest.MonkeyPatch) -> None:
    prop = getattr(fuzz_cases, name)

    @SEARCH
    @given(data=st.data())
    def case(data: st.DataObject) -> None:
        prop(inputs, data, capsys, monkeypatch)

    case()
