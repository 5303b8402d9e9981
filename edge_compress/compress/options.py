"""The options of one compression run: the command line and the Python API share this one type."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass
class CompressOptions:
    model: Any                                    # a model file (str | Path), or an nn.Module (Python API)
    target: str = "host"
    arch: str | None = None
    arch_kwargs: dict = field(default_factory=dict)
    trust_model: bool = False
    calib: str | None = None
    calib_samples: int = 256
    input_shape: tuple[int, ...] | None = None   # (N, C, H, W); N defaults to the profile's batch size
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    latency_ms: str | float | None = None
    speedup: float | None = None
    memory_mb: str | float | None = None
    macs: str | float | None = None
    params: str | float | None = None
    criterion: str = "auto"   # auto: see compress/criteria.resolve_criterion (depends on calib and train data)
    criterion_options: dict = field(default_factory=dict)   # e.g. {"alpha": 1.01, "cutoff": "scree"}
    selection: str = "knapsack"                   # knapsack (cost-model priced) or uniform per-layer ratios
    step: float = 0.05                            # fraction of the original channels removed per round
    device: str | None = None                     # user@host[:port]: measure there over SSH
    ssh_key: str | None = None
    known_hosts: str | None = None
    device_python: str | None = None
    dynamic_batch: bool = False                   # export ONNX with a dynamic batch dimension
    train_data: str | None = None                 # recovery data (same formats as --calib); None: no recovery
    train_samples: int | None = None
    recovery: dict = field(default_factory=dict)  # compress.recovery.RecoveryOptions fields, e.g. {"epochs": 1}
    out: str | Path | None = None
    seed: int = 0
    progress: bool = True
    example_input: Any = None                     # with a model object: a tensor whose shape is the input's

    def to_dict(self) -> dict:
        # the model object and the example tensor are described, not copied (and stay JSON for the report)
        d = asdict(replace(self, model="", example_input=None))
        d["model"] = _describe(self.model)
        d["out"] = str(self.out) if self.out else None
        if self.example_input is not None:
            shape = getattr(self.example_input, "shape", None)
            d["example_input"] = {"shape": [int(v) for v in shape]} if shape is not None else \
                type(self.example_input).__name__
        return d


def _describe(model) -> str:
    if isinstance(model, (str, Path)):
        return str(model)
    return f"<{type(model).__name__} object>"
