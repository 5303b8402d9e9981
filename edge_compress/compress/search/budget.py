"""The budget a pruned model must meet: latency, memory, MACs, parameters; absolute or relative.

Relative forms are resolved against the original model once it has been evaluated: `--speedup 2` means
half the original latency; `--macs 50%` or `--params 0.5x` means that fraction of the original.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from ..errors import InputError

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


@dataclass(frozen=True)
class Quantity:
    """An absolute value, or a fraction of the original model's value."""

    value: float
    relative: bool

    def resolve(self, original: float) -> float:
        return self.value * original if self.relative else self.value


def parse_quantity(text: str | float | int, option: str, allow_suffix: bool = False) -> Quantity:
    if isinstance(text, (int, float)):
        q = Quantity(float(text), False)
    else:
        s = str(text).strip().lower()
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(%|x|[kmg]?)", s)
        if not m or (m.group(2) in ("k", "m", "g") and not allow_suffix):
            hint = "a number, with K/M/G, " if allow_suffix else "a number, "
            raise InputError(f"{option} {text!r} is not {hint}or a fraction of the original like 50% or 0.5x")
        number, unit = float(m.group(1)), m.group(2)
        if unit == "%":
            q = Quantity(number / 100.0, True)
        elif unit == "x":
            q = Quantity(number, True)
        else:
            q = Quantity(number * _SUFFIX[unit], False)
    if not 0 < q.value < math.inf:  # also refuses NaN and inf, which would make every check pass or fail
        raise InputError(f"{option} must be positive and finite, got {text!r}")
    if q.relative and q.value > 1:
        raise InputError(f"{option} {text!r} asks for more than the original model; give a fraction below 100%")
    return q


@dataclass(frozen=True)
class BudgetSpec:
    """What the user asked for, before the original model is known."""

    latency_ms: Quantity | None = None
    speedup: float | None = None
    memory_mb: Quantity | None = None
    macs: Quantity | None = None
    params: Quantity | None = None

    @classmethod
    def from_options(cls, latency_ms=None, speedup=None, memory_mb=None, macs=None, params=None,
                     default_latency_ms=None, default_memory_mb=None, allow_empty: bool = False) -> "BudgetSpec":
        if latency_ms is not None and speedup is not None:
            raise InputError("give --latency-ms or --speedup, not both")
        if speedup is not None and not float(speedup) > 1.0:  # NaN would resolve to a budget nothing misses
            raise InputError(f"--speedup must be greater than 1, got {speedup}")
        spec = cls(
            latency_ms=parse_quantity(latency_ms, "--latency-ms") if latency_ms is not None else None,
            speedup=float(speedup) if speedup is not None else None,
            memory_mb=parse_quantity(memory_mb, "--memory-mb") if memory_mb is not None else None,
            macs=parse_quantity(macs, "--macs", allow_suffix=True) if macs is not None else None,
            params=parse_quantity(params, "--params", allow_suffix=True) if params is not None else None,
        )
        if spec.empty:  # nothing on the command line: the profile's defaults
            spec = cls(latency_ms=Quantity(default_latency_ms, False) if default_latency_ms else None,
                       memory_mb=Quantity(default_memory_mb, False) if default_memory_mb else None)
        if spec.empty and not allow_empty:
            raise InputError("no budget: pass --latency-ms, --speedup, --memory-mb, --macs or --params "
                             "(this target's profile has no default budget)")
        return spec

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.latency_ms, self.speedup, self.memory_mb, self.macs, self.params))

    @property
    def latency_fraction(self) -> float | None:
        """The latency budget as a fraction of the original's (--speedup X, or --latency-ms 75%); None if absolute."""
        if self.speedup is not None:
            return 1.0 / self.speedup
        if self.latency_ms is not None and self.latency_ms.relative:
            return self.latency_ms.value
        return None

    def resolve(self, original: "Metrics") -> "Budget":
        latency = None
        if self.speedup is not None:
            latency = original.latency_ms / self.speedup
        elif self.latency_ms is not None:
            latency = self.latency_ms.resolve(original.latency_ms)
        return Budget(
            latency_ms=latency,
            memory_mb=self.memory_mb.resolve(original.memory_mb) if self.memory_mb else None,
            macs=self.macs.resolve(original.macs) if self.macs else None,
            params=self.params.resolve(original.params) if self.params else None,
        )


@dataclass(frozen=True)
class Metrics:
    """One model's numbers; `latency_kind` says whether latency was measured or predicted (and how)."""

    latency_ms: float
    latency_kind: str
    memory_mb: float
    macs: int
    params: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Budget:
    latency_ms: float | None = None
    memory_mb: float | None = None
    macs: float | None = None
    params: float | None = None

    def misses(self, m: Metrics, latency_margin: float = 1.0) -> list[str]:
        """The constraints `m` misses, as 'name achieved > limit' strings; empty when all are met."""
        out = []
        for name, limit, value in (("latency_ms", self.latency_ms and self.latency_ms * latency_margin, m.latency_ms),
                                   ("memory_mb", self.memory_mb, m.memory_mb), ("macs", self.macs, m.macs),
                                   ("params", self.params, m.params)):
            if limit is not None and value > limit:
                out.append(f"{_LABELS[name]} {_human(name, value)} > {_human(name, limit)}")
        return out

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


_LABELS = {"latency_ms": "latency", "memory_mb": "memory", "macs": "MACs", "params": "params"}


def _human(name: str, value: float) -> str:
    from ..report import units

    return {"latency_ms": units.ms, "memory_mb": units.mb}.get(name, units.count)(value)
