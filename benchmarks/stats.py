"""Median and spread of repeated measurements, and ratios of medians."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Summary:
    """Repeated samples of one quantity (tokens/s or seconds)."""

    samples: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a summary needs at least one sample")

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    @property
    def spread(self) -> float:
        """(max - min) / median: the relative width of what was measured."""
        return (self.high - self.low) / self.median if self.median else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "median": round(self.median, 4),
            "min": round(self.low, 4),
            "max": round(self.high, 4),
            "spread": round(self.spread, 4),
            "n": len(self.samples),
            "samples": [round(s, 4) for s in self.samples],
        }


def summarize(samples: Sequence[float]) -> Summary:
    return Summary(tuple(float(s) for s in samples))


def ratio(numerator: Summary, denominator: Summary) -> float:
    """Ratio of the medians (how many times faster ``numerator`` is)."""
    return numerator.median / denominator.median
