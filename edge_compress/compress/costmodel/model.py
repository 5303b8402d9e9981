"""Latency and memory predictor for targets that cannot be measured from here (and for pricing pruning
moves on those that can).

Per conv/linear layer: time = max(flops / (peak * efficiency[kind]), bytes / (bandwidth *
memory_efficiency)) + layer_overhead_ms; per network: + network_overhead_ms. Normalisation and
activation layers are assumed fused into the convolution (TensorRT and ONNX Runtime both do); the cost
of the remaining small ops (adds, pads) is carried by the per-layer overhead. Channel counts are padded
up to the profile's channel_alignment before counting FLOPs, because blocked kernels compute the padding
too. Every value returned is a prediction and is labelled as one by the caller, together with whether
the profile's factors were fitted to measurements.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from ..hooked_pass import hooked_pass

BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "int8": 1}
LAYER_KINDS = ("conv_kxk", "conv_1x1", "depthwise", "linear")


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
    kernel_elems: int = 1  # product of the kernel's dimensions
    groups: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def cost_kind(self) -> str:
        """The kind whose compute efficiency applies: conv_kxk, conv_1x1, depthwise or linear."""
        if self.kind == "Linear":
            return "linear"
        # `<=`, not `==`: a cost scaled for a partly pruned depthwise conv may keep the original groups.
        if self.groups > 1 and self.in_channels <= self.groups:
            return "depthwise"
        return "conv_1x1" if self.kernel_elems == 1 else "conv_kxk"


def layer_costs(model: nn.Module, example_input: torch.Tensor) -> list[LayerCost]:
    """Shapes and MACs of every conv/linear layer, from one forward pass with hooks."""
    costs: list[LayerCost] = []

    def hook(name):
        def fn(m, inputs, output):
            x = inputs[0]
            if isinstance(m, nn.modules.conv._ConvNd):
                k = math.prod(m.kernel_size)
                macs = output.numel() * (m.in_channels // m.groups) * k
                cin, cout, groups = m.in_channels, m.out_channels, m.groups
            else:
                k, groups = 1, 1
                macs = output.numel() * m.in_features
                cin, cout = m.in_features, m.out_features
            costs.append(LayerCost(name, type(m).__name__, cin, cout, int(macs),
                                   sum(p.numel() for p in m.parameters(recurse=False)), x.numel(), output.numel(),
                                   k, groups))
        return fn

    hooked_pass(model, example_input, [(m, hook(name)) for name, m in model.named_modules()
                                       if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))])
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
    kind_efficiency: dict = field(default_factory=dict)  # cost kind -> efficiency; missing kinds use compute_efficiency
    network_overhead_ms: float = 0.0
    channel_alignment: int = 1

    @property
    def usable(self) -> bool:
        return bool(self.peak_gflops) and bool(self.bandwidth_gbps)

    def efficiency(self, kind: str) -> float:
        return self.kind_efficiency.get(kind) or self.compute_efficiency


def factors_from_profile(profile) -> CostFactors:
    hw, rt, cm = profile.hardware, profile.runtime, profile.cost_model
    if cm.reference_gflops is not None and cm.reference_gflops.value:
        peak = float(cm.reference_gflops.value)
    elif rt.precision == "int8" and hw.int8_tops.value:
        peak = float(hw.int8_tops.value) * 1000.0
    elif rt.precision == "fp16" and hw.fp16_gflops.value:
        peak = float(hw.fp16_gflops.value)
    else:
        peak = float(hw.fp32_gflops.value) if hw.fp32_gflops.value else None
    if cm.reference_gbps is not None and cm.reference_gbps.value:
        bw = float(cm.reference_gbps.value)
    else:
        bw = float(hw.memory_bandwidth_gbps.value) if hw.memory_bandwidth_gbps.value else None
    kinds = {} if cm.kind_efficiency is None else {
        k: v for k in LAYER_KINDS if (v := getattr(cm.kind_efficiency, k)) is not None}
    return CostFactors(peak, bw, cm.compute_efficiency, cm.memory_efficiency, cm.layer_overhead_ms,
                       BYTES_PER_ELEMENT[rt.precision], cm.fitted, cm.source, kinds, cm.network_overhead_ms,
                       cm.channel_alignment)


def _padded(c: int, align: int) -> int:
    return -(-c // align) * align


def padded_macs(cost: LayerCost, align: int) -> float:
    """MACs with channels padded to `align`; an input narrower than one block is read as it is (the
    blocked kernels take such inputs unpadded, like an RGB image)."""
    if align <= 1 or cost.kind == "Linear":
        return float(cost.macs)
    if cost.out_channels < 1:
        return float(cost.macs)
    if cost.cost_kind == "depthwise":
        return cost.macs * _padded(cost.out_channels, align) / cost.out_channels
    cin = max(1, cost.in_channels // cost.groups)
    cin_eff = cin if cin < align else _padded(cin, align)
    return cost.macs * (cin_eff / cin) * (_padded(cost.out_channels, align) / cost.out_channels)


def layer_times_ms(cost: LayerCost, f: CostFactors) -> tuple[float, float]:
    """(compute time, memory time) of one layer, without the overhead."""
    flops = 2.0 * padded_macs(cost, f.channel_alignment)
    traffic = (cost.weight_elems + cost.input_elems + cost.output_elems) * f.bytes_per_element
    compute_ms = flops / (f.peak_gflops * 1e9 * f.efficiency(cost.cost_kind)) * 1e3
    memory_ms = traffic / (f.bandwidth_gbps * 1e9 * f.memory_efficiency) * 1e3
    return compute_ms, memory_ms


def predict_layer_ms(cost: LayerCost, f: CostFactors) -> float:
    return max(layer_times_ms(cost, f)) + f.layer_overhead_ms


def predict_latency_ms(costs: list[LayerCost], f: CostFactors) -> float | None:
    if not f.usable:
        return None
    return f.network_overhead_ms + sum(predict_layer_ms(c, f) for c in costs)


def predict_memory_mb(costs: list[LayerCost], total_params: int, bytes_per_element: int,
                      runtime_overhead_mb: float = 0.0) -> float:
    """Weights plus the largest input+output activation pair, plus the runtime's own memory where known.
    A residual tensor alive across a block is not counted: this is a lower bound on peak activations."""
    peak_act = max((c.input_elems + c.output_elems for c in costs), default=0)
    return (total_params + peak_act) * bytes_per_element / 2**20 + runtime_overhead_mb
