"""Adaptive timing: run until the median is known to a stated precision, within a run count and a time cap.

The interval is distribution-free: the order statistics x_(l), x_(u) of n runs bracket the true median
with probability 1 - 2 P(B <= l - 1), B ~ Binomial(n, 1/2) (the sign-test interval). Latency samples
are skewed and heavy-tailed (a preempted run is 10x the rest), so an interval that assumes normality
or uses the standard deviation would be wide for the wrong reason or wrong; a bootstrap would work too
but costs thousands of resamples per check and is random. The order-statistic interval is exact for
any continuous distribution, costs one sort, and is deterministic, so the stopping rule is testable.

Between checks the runs must be roughly independent; timing drift (a shared machine) violates that,
which is why ratios of two models are taken from interleaved pairs (``measure_interleaved``): the
per-pair ratio cancels the drift, and its median's interval decides when a pair stops.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95

# Why a measurement stopped.
PRECISION, MAX_RUNS, TIME_CAP, FIXED = "precision", "max_runs", "time_cap", "fixed"


@dataclass(frozen=True)
class StopRule:
    """Time until the median's (or the ratio's) interval half-width is within ``precision_pct`` % of it.

    Checked every ``check_every`` runs once ``min_runs`` ran; ``max_runs`` and ``max_seconds`` cap the
    run count and the timed wall time. ``fixed_runs``: what a runner that cannot stop adaptively (a tool
    or a device that times a fixed count or a duration itself) runs instead.
    """

    precision_pct: float = 1.0
    min_runs: int = 20
    max_runs: int = 400
    max_seconds: float = 30.0
    fixed_runs: int = 200
    check_every: int = 10
    confidence: float = CONFIDENCE

    def __post_init__(self) -> None:
        for name in ("min_runs", "max_runs", "fixed_runs", "check_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"StopRule.{name} must be an int >= 1, got {value!r}")
        if self.min_runs > self.max_runs:
            raise ValueError(f"StopRule.min_runs ({self.min_runs}) exceeds max_runs ({self.max_runs})")
        if not 0 < self.precision_pct < 100:
            raise ValueError(f"StopRule.precision_pct must be in (0, 100), got {self.precision_pct!r}")
        if not self.max_seconds > 0:
            raise ValueError(f"StopRule.max_seconds must be > 0, got {self.max_seconds!r}")
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"StopRule.confidence must be in (0.5, 1), got {self.confidence!r}")

    def verdict(self, runs: int, elapsed_s: float, half_width_pct: float | None) -> str | None:
        """Why to stop now (PRECISION, MAX_RUNS, TIME_CAP), or None to go on. Precision wins a tie: a
        measurement that reached it at its last allowed run did reach it."""
        if runs >= self.min_runs and half_width_pct is not None and half_width_pct <= self.precision_pct:
            return PRECISION
        if runs >= self.max_runs:
            return MAX_RUNS
        if elapsed_s >= self.max_seconds and runs >= self.min_runs:
            return TIME_CAP
        return None

    def next_block(self, runs: int) -> int:
        """Runs to take before the next check: up to min_runs first, then check_every, never past max_runs."""
        step = self.min_runs - runs if runs < self.min_runs else self.check_every
        return max(1, min(step, self.max_runs - runs))


@functools.lru_cache(maxsize=4096)
def median_interval_ranks(n: int, confidence: float = CONFIDENCE) -> tuple[int, int] | None:
    """0-based ranks (lo, hi) of the sorted sample that bracket the median with at least ``confidence``;
    None when n runs are too few for any such interval (n < 6 at 95 %)."""
    alpha_half = (1.0 - confidence) / 2
    log_half_n = n * math.log(0.5)
    cdf, l_one_based = 0.0, 0
    # l is the largest rank with P(B <= l - 1) <= alpha/2; the pmf grows up to n/2, so the sum stays small.
    for k in range(0, n // 2 + 1):
        cdf += math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + log_half_n)
        if cdf > alpha_half:
            break
        l_one_based = k + 1
    if l_one_based < 1:
        return None
    return l_one_based - 1, n - l_one_based


def median_interval(samples: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The distribution-free interval of the median of ``samples`` (see the module docstring)."""
    ranks = median_interval_ranks(len(samples), confidence)
    if ranks is None:
        return None
    ordered = np.sort(np.asarray(samples, dtype=np.float64))
    return float(ordered[ranks[0]]), float(ordered[ranks[1]])


def half_width_pct(samples: Sequence[float], confidence: float = CONFIDENCE) -> float | None:
    """The interval's larger distance from the median, in % of the median (the interval is asymmetric for
    skewed samples; the larger side is the honest one). None when there are too few samples."""
    interval = median_interval(samples, confidence)
    if interval is None:
        return None
    median = float(np.median(samples))
    return 100.0 * max(median - interval[0], interval[1] - median) / median


@dataclass(frozen=True)
class MedianPrecision:
    """How precisely a median is known: its interval, the precision reached, and why timing stopped.

    ``stopped_on``: "precision" (reached ``target_pct``), "max_runs", "time_cap", or "fixed" (a fixed run
    count: adaptive timing was off or the runner cannot stop adaptively; ``note`` says why). ``decided_by``:
    "median" or "ratio" (an interleaved pair stops on the precision of the per-pair ratio, recorded in
    ``ratio``, ``ratio_low`` and ``ratio_high``).
    """

    runs: int
    confidence: float
    low_ms: float | None
    high_ms: float | None
    half_width_pct: float | None
    target_pct: float | None
    stopped_on: str
    adaptive: bool
    decided_by: str = "median"
    ratio: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None
    ratio_half_width_pct: float | None = None
    note: str | None = None

    @classmethod
    def of(cls, samples: Sequence[float], rule: StopRule | None, stopped_on: str, **extra: Any) -> MedianPrecision:
        confidence = rule.confidence if rule is not None else CONFIDENCE
        interval = median_interval(samples, confidence)
        return cls(runs=len(samples), confidence=confidence,
                   low_ms=interval[0] if interval else None, high_ms=interval[1] if interval else None,
                   half_width_pct=half_width_pct(samples, confidence),
                   target_pct=rule.precision_pct if rule is not None else None, stopped_on=stopped_on,
                   adaptive=rule is not None, **extra)

    @classmethod
    def not_adaptive(cls, runs: int, note: str) -> MedianPrecision:
        """A median timed by a tool or a device whose single runs are not seen here: no interval."""
        return cls(runs=runs, confidence=CONFIDENCE, low_ms=None, high_ms=None, half_width_pct=None,
                   target_pct=None, stopped_on=FIXED, adaptive=False, note=note)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def short(self) -> str:
        """'±0.8 %' (what the console shows), or '' when no interval is known."""
        pct = self.ratio_half_width_pct if self.decided_by == "ratio" else self.half_width_pct
        return f"±{pct:.1f} %" if pct is not None else ""


def ratio_precision(numerator: Sequence[float], denominator: Sequence[float],
                    confidence: float = CONFIDENCE) -> tuple[float, float | None, float | None, float | None]:
    """Median of the per-pair ratios numerator[k] / denominator[k], its interval and half-width (%)."""
    ratios = np.asarray(numerator, dtype=np.float64) / np.asarray(denominator, dtype=np.float64)
    interval = median_interval(ratios, confidence)
    return (float(np.median(ratios)), interval[0] if interval else None, interval[1] if interval else None,
            half_width_pct(ratios, confidence))
