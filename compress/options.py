"""The options of one compression run: the command line and the Python API share this one type."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class CompressOptions:
    model: str | Path
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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"], d["out"] = str(self.model), (str(self.out) if self.out else None)
        return d
