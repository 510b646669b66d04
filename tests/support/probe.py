"""A private copy of wheel_tests/wheel_probe.py, loaded by file as the wheel suite loads it (its rules judged
here without running anything)."""

from __future__ import annotations

import importlib.util
import sys

from tests.support.checkout import REPO

_spec = importlib.util.spec_from_file_location("wheel_probe_copy", REPO / "wheel_tests" / "wheel_probe.py")
assert _spec and _spec.loader
wheel_probe = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = wheel_probe  # dataclasses look their module up
_spec.loader.exec_module(wheel_probe)
