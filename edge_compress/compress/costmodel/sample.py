"""One network the cost model is fitted to: what it was, its layers, and its (measured or published) latency."""
from __future__ import annotations

from dataclasses import dataclass

from .model import LayerCost


@dataclass
class Sample:
    """One measured (or published) network: what it was, its layers, and its median latency."""

    description: dict
    costs: list[LayerCost]
    measured_ms: float

    def to_dict(self) -> dict:
        return {"description": self.description, "measured_ms": self.measured_ms,
                "costs": [c.to_dict() for c in self.costs]}


