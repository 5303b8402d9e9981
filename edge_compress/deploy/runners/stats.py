"""Latency statistics: the one typed result every runner's ``measure`` returns."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_compress.deploy.runners.adaptive import MedianPrecision

# Fixed percentiles, so that results from different runners and runs compare field by field.
PERCENTILES = (90, 95, 99)

_META_REQUIRED = ("warmup_runs", "batch_size", "runtime", "provider", "threads", "where")
_META_OPTIONAL = ("method", "precision")

@dataclass(frozen=True)
class LatencyStats:
    """Latency of one model on one runtime/provider, in milliseconds per batch.

    ``runs`` counts the timed runs the statistics come from; ``warmup_runs`` ran before them and
    are excluded. ``std_ms`` is the population standard deviation (numpy's default, ddof=0).
    ``throughput_ips`` is images per second at the mean latency. ``method`` says the numbers were
    measured, not predicted by a model, so that reports never mix the two up.
    """

    median_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    runs: int
    warmup_runs: int
    batch_size: int
    throughput_ips: float
    runtime: str
    provider: str
    threads: int | None
    where: str
    method: str = "measured"
    # The median's interval and why timing stopped; None only for statistics made before it existed.
    precision: MedianPrecision | None = None

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise ValueError(f"runs must be >= 1, got {self.runs}")
        if self.warmup_runs < 0:
            raise ValueError(f"warmup_runs must be >= 0, got {self.warmup_runs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], **meta: Any) -> LatencyStats:
        """Compute the statistics of timed samples (ms); ``meta`` gives the other fields.

        ``meta`` must hold warmup_runs, batch_size, runtime, provider, threads and where (and may
        hold method and precision). Percentiles use linear interpolation between the closest ranks.
        """
        missing = [k for k in _META_REQUIRED if k not in meta]
        unknown = sorted(set(meta) - set(_META_REQUIRED) - set(_META_OPTIONAL))
        if missing or unknown:
            raise TypeError(f"LatencyStats.from_samples: missing {missing}, unknown {unknown}")
        samples = np.asarray(samples_ms, dtype=np.float64)
        if samples.ndim != 1 or samples.size == 0:
            raise ValueError("LatencyStats.from_samples needs a non-empty 1-D list of samples")
        if not np.all(np.isfinite(samples)) or np.any(samples <= 0):
            raise ValueError("latency samples must be finite and > 0 ms")
        p90, p95, p99 = np.percentile(samples, PERCENTILES, method="linear")
        mean_ms = float(samples.mean())
        return cls(
            median_ms=float(np.median(samples)),
            mean_ms=mean_ms,
            std_ms=float(samples.std()),
            min_ms=float(samples.min()),
            max_ms=float(samples.max()),
            p90_ms=float(p90),
            p95_ms=float(p95),
            p99_ms=float(p99),
            runs=int(samples.size),
            throughput_ips=meta["batch_size"] * 1000.0 / mean_ms,
            **meta,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (floats, ints, strings, None)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyStats:
        """Inverse of ``to_dict``; unknown or missing keys are errors, not silently dropped."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown LatencyStats keys {unknown}; known: {sorted(names)}")
        precision = data.get("precision")
        if isinstance(precision, Mapping):
            data = {**data, "precision": MedianPrecision(**precision)}
        return cls(**data)

    def __str__(self) -> str:
        known = f" {self.precision.short()}" if self.precision is not None and self.precision.short() else ""
        return (
            f"median {self.median_ms:.3f} ms{known}, p90 {self.p90_ms:.3f}, p99 {self.p99_ms:.3f} "
            f"(mean {self.mean_ms:.3f} +- {self.std_ms:.3f}, {self.runs} runs after "
            f"{self.warmup_runs} warm-up, batch {self.batch_size}, {self.throughput_ips:.1f} img/s) "
            f"[{self.method}, {self.runtime}, {self.provider}, {self.where}]"
        )
