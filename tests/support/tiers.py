"""The tier folders under tests/ and the markers each gives its tests (scripts/test.sh selects tiers by marker)."""

from __future__ import annotations

# Each tier folder and the markers its tests carry (scripts/test.sh selects tiers by these markers).
TIERS: dict[str, tuple[str, ...]] = {
    "unit": (),
    "integration/builds": ("build", "network"),
    "integration/emulated": ("emulated", "network"),
    "integration/network": ("network",),
    "extended": ("extended",),
    "bench": ("bench",),
}
TIER_MARKERS = frozenset(m for marks in TIERS.values() for m in marks)
