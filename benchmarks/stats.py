"""Median and spread of repeated measurements, ratios of medians, and paired ratios with 95% intervals."""

from __future__ import annotations

import math
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


def t_quantile_975(df: int) -> float:
    """Student's t 97.5% quantile for ``df`` degrees of freedom: the half-width factor of a two-sided 95%
    interval. Found by bisection on the closed form of P(|T| <= t) for whole ``df`` (Abramowitz & Stegun
    26.7.3/26.7.4), so no statistics package is needed for one number."""
    if df < 1:
        raise ValueError("a t interval needs at least two paired samples (df >= 1)")

    def central(t: float) -> float:  # P(|T| <= t)
        theta = math.atan(t / math.sqrt(df))
        c2 = math.cos(theta) ** 2
        term, total = 1.0, 1.0
        if df % 2 == 0:  # sin θ (1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + ... up to cos^(df-2)θ)
            for k in range(1, df // 2):
                term *= c2 * (2 * k - 1) / (2 * k)
                total += term
            return math.sin(theta) * total
        if df == 1:
            return 2 * theta / math.pi
        # 2/π (θ + sin θ cos θ (1 + 2/3 cos²θ + 2·4/(3·5) cos⁴θ + ... up to cos^(df-3)θ))
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)

    low, high = 0.0, 1000.0
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if central(mid) < 0.95 else (low, mid)
    return (low + high) / 2


@dataclass(frozen=True)
class PairedRatio:
    """How many times faster A is than B, from passes measured in pairs (A's pass i next to B's pass i).

    The point estimate is the geometric mean of the per-pair ratios; the 95% interval is Student's t on
    their logarithms (the paired differences of log rates), so a speed phase of the machine that slows both
    passes of a pair cancels out of that pair's ratio instead of widening the interval.
    """

    a: tuple[float, ...]
    b: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.a) != len(self.b) or len(self.a) < 2:
            raise ValueError(f"paired ratios need two equally long series of at least 2 ({len(self.a)}, {len(self.b)})")
        if min(self.a + self.b) <= 0:
            raise ValueError("rates must be positive")

    @property
    def logs(self) -> tuple[float, ...]:
        return tuple(math.log(x / y) for x, y in zip(self.a, self.b, strict=True))

    @property
    def ratio(self) -> float:
        return math.exp(statistics.fmean(self.logs))

    @property
    def interval(self) -> tuple[float, float]:
        logs = self.logs
        half = t_quantile_975(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
        mean = statistics.fmean(logs)
        return math.exp(mean - half), math.exp(mean + half)

    def to_json(self) -> dict[str, Any]:
        low, high = self.interval
        return {
            "ratio": round(self.ratio, 4),
            "ci95": [round(low, 4), round(high, 4)],
            "pairs": len(self.a),
            "per_pair": [round(x / y, 4) for x, y in zip(self.a, self.b, strict=True)],
        }
