"""A first, simple latency and memory predictor for targets that cannot be measured from here.

Per conv/linear layer: time = max(flops / (peak * compute_efficiency), bytes / (bandwidth *
memory_efficiency)) + layer_overhead_ms, with the factors read from the device profile. Normalisation
and activation layers are assumed fused into the convolution (TensorRT and ONNX Runtime both do).
Every value it returns is a prediction and is labelled as one by the caller, together with whether the
profile's factors were fitted to measurements.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "int8": 1}


@dataclass(frozen=True)
class LayerCost:
    name: str
    kind: str
    in_channels: int
    out_channels: int
    macs: int
    weight_elems: int
    input_elems: int
    output_elems: int

    def to_dict(self) -> dict:
        return asdict(self)


def layer_costs(model: nn.Module, example_input: torch.Tensor) -> list[LayerCost]:
    """Shapes and MACs of every conv/linear layer, from one forward pass with hooks."""
    costs: list[LayerCost] = []
    handles = []

    def hook(name):
        def fn(m, inputs, output):
            x = inputs[0]
            if isinstance(m, nn.modules.conv._ConvNd):
                k = int(torch.tensor(m.kernel_size).prod())
                macs = output.numel() * (m.in_channels // m.groups) * k
                cin, cout = m.in_channels, m.out_channels
            else:
                macs = output.numel() * m.in_features
                cin, cout = m.in_features, m.out_features
            costs.append(LayerCost(name, type(m).__name__, cin, cout, int(macs),
                                   sum(p.numel() for p in m.parameters(recurse=False)), x.numel(), output.numel()))
        return fn

    for name, m in model.named_modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            handles.append(m.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    return costs


@dataclass(frozen=True)
class CostFactors:
    peak_gflops: float | None
    bandwidth_gbps: float | None
    compute_efficiency: float
    memory_efficiency: float
    layer_overhead_ms: float
    bytes_per_element: int
    fitted: bool
    source: str

    @property
    def usable(self) -> bool:
        return bool(self.peak_gflops) and bool(self.bandwidth_gbps)


def factors_from_profile(profile) -> CostFactors:
    hw, rt, cm = profile.hardware, profile.runtime, profile.cost_model
    if rt.precision == "int8" and hw.int8_tops.value:
        peak = float(hw.int8_tops.value) * 1000.0
    elif rt.precision == "fp16" and hw.fp16_gflops.value:
        peak = float(hw.fp16_gflops.value)
    else:
        peak = float(hw.fp32_gflops.value) if hw.fp32_gflops.value else None
    bw = float(hw.memory_bandwidth_gbps.value) if hw.memory_bandwidth_gbps.value else None
    return CostFactors(peak, bw, cm.compute_efficiency, cm.memory_efficiency, cm.layer_overhead_ms,
                       BYTES_PER_ELEMENT[rt.precision], cm.fitted, cm.source)


def predict_layer_ms(cost: LayerCost, f: CostFactors) -> float:
    flops = 2.0 * cost.macs
    traffic = (cost.weight_elems + cost.input_elems + cost.output_elems) * f.bytes_per_element
    compute_ms = flops / (f.peak_gflops * 1e9 * f.compute_efficiency) * 1e3
    memory_ms = traffic / (f.bandwidth_gbps * 1e9 * f.memory_efficiency) * 1e3
    return max(compute_ms, memory_ms) + f.layer_overhead_ms


def predict_latency_ms(costs: list[LayerCost], f: CostFactors) -> float | None:
    if not f.usable:
        return None
    return sum(predict_layer_ms(c, f) for c in costs)


def predict_memory_mb(costs: list[LayerCost], total_params: int, bytes_per_element: int) -> float:
    """Weights plus the largest input+output activation pair; runtime overhead is not included."""
    peak_act = max((c.input_elems + c.output_elems for c in costs), default=0)
    return (total_params + peak_act) * bytes_per_element / 2**20
