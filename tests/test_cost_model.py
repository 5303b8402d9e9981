"""The analytic cost model: per-layer MACs on a hand-computable net, latency and memory predictions,
and the factors it reads from device profiles."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from compress.cost_model import (
    BYTES_PER_ELEMENT,
    CostFactors,
    LayerCost,
    factors_from_profile,
    layer_costs,
    predict_latency_ms,
    predict_layer_ms,
    predict_memory_mb,
)
from device_profiles import load_profile


class Hand(nn.Module):
    """3->8 3x3 conv (pad 1) on 8x8, BN/ReLU, depthwise 3x3, 1x1 conv with bias, pool, Linear 8->4."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.pw = nn.Conv2d(8, 8, 1, stride=2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = self.pw(self.dw(x))
        return self.fc(x.mean((2, 3)))


X = torch.randn(1, 3, 8, 8)


@pytest.fixture
def costs():
    return {c.name: c for c in layer_costs(Hand().eval(), X)}


def test_layer_costs_hand_computed(costs):
    assert list(costs) == ["conv", "dw", "pw", "fc"]  # conv/linear only, in execution order; no BN
    conv, dw, pw, fc = costs["conv"], costs["dw"], costs["pw"], costs["fc"]
    assert conv.macs == 8 * 8 * 8 * 3 * 9 == 13824
    assert (conv.kind, conv.in_channels, conv.out_channels) == ("Conv2d", 3, 8)
    assert (conv.weight_elems, conv.input_elems, conv.output_elems) == (8 * 3 * 9, 3 * 64, 8 * 64)
    # depthwise: each output sees in_channels / groups = 1 input channel
    assert dw.macs == 8 * 8 * 8 * 1 * 9 == 4608
    assert dw.weight_elems == 8 * 9 and dw.in_channels == dw.out_channels == 8
    # 1x1 stride 2: 4x4 outputs; the bias counts as weights but not as MACs
    assert pw.macs == 4 * 4 * 8 * 8 and pw.weight_elems == 64 + 8 and pw.output_elems == 8 * 16
    assert fc.macs == 32 and fc.kind == "Linear" and fc.weight_elems == 32 + 4
    assert (fc.input_elems, fc.output_elems) == (8, 4)


def test_layer_costs_scale_with_batch_and_leave_no_hooks():
    model = Hand().eval()
    one = layer_costs(model, X)
    two = layer_costs(model, torch.randn(2, 3, 8, 8))
    assert [c.macs * 2 for c in one] == [c.macs for c in two]
    assert [c.weight_elems for c in one] == [c.weight_elems for c in two]
    assert all(not m._forward_hooks for m in model.modules())
    assert one[0].to_dict()["macs"] == 13824


def test_layer_costs_of_a_reference_arch():
    from compress.archs import get_arch

    costs = layer_costs(get_arch("resnet20").factory().eval(), torch.randn(1, 3, 32, 32))
    assert len(costs) == 20
    # ResNet-20 is about 41 M MACs (He et al.: ~0.041 GFLOPs counted as multiply-adds)
    assert 40e6 < sum(c.macs for c in costs) < 42e6


FACTORS = CostFactors(peak_gflops=1.0, bandwidth_gbps=1.0, compute_efficiency=0.5, memory_efficiency=0.25,
                      layer_overhead_ms=0.5, bytes_per_element=4, fitted=False, source="test")


def _layer(macs=0, weights=0, inputs=0, outputs=0) -> LayerCost:
    return LayerCost("l", "Conv2d", 1, 1, macs, weights, inputs, outputs)


def test_predict_layer_ms_is_roofline_plus_overhead():
    compute_bound = _layer(macs=10_000, weights=10, inputs=10, outputs=10)
    # 20 000 FLOPs at 0.5 GFLOP/s = 0.04 ms; 120 bytes at 0.25 GB/s = 0.00048 ms
    assert predict_layer_ms(compute_bound, FACTORS) == pytest.approx(0.04 + 0.5)
    memory_bound = _layer(macs=10, weights=1000, inputs=1000, outputs=500)
    # 10 000 bytes at 0.25 GB/s = 0.04 ms
    assert predict_layer_ms(memory_bound, FACTORS) == pytest.approx(0.04 + 0.5)


def test_predict_latency_includes_overhead_per_layer():
    empty = [_layer() for _ in range(7)]
    assert predict_latency_ms(empty, FACTORS) == pytest.approx(7 * 0.5)
    assert predict_latency_ms([], FACTORS) == 0
    layers = [_layer(macs=1000 * i, weights=5, inputs=5, outputs=5) for i in range(1, 4)]
    assert predict_latency_ms(layers, FACTORS) == pytest.approx(sum(predict_layer_ms(c, FACTORS) for c in layers))


def test_predict_latency_is_monotone_in_macs():
    values = [predict_latency_ms([_layer(macs=m, weights=100, inputs=100, outputs=100)], FACTORS)
              for m in (0, 10, 1_000, 100_000, 10_000_000, 10**9)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[-1] > values[-2] > values[-3]  # strictly, once compute-bound
    # the same holds on a real model: halving a conv's width lowers the prediction
    wide = layer_costs(nn.Sequential(nn.Conv2d(3, 32, 3), nn.Conv2d(32, 32, 3)), torch.randn(1, 3, 16, 16))
    narrow = layer_costs(nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 32, 3)), torch.randn(1, 3, 16, 16))
    assert sum(c.macs for c in narrow) < sum(c.macs for c in wide)
    assert predict_latency_ms(narrow, FACTORS) < predict_latency_ms(wide, FACTORS)


def test_predict_latency_needs_usable_factors():
    for peak, bw in ((None, 1.0), (1.0, None), (0.0, 1.0), (None, None)):
        f = CostFactors(peak, bw, 0.5, 0.5, 0.1, 4, False, "test")
        assert not f.usable
        assert predict_latency_ms([_layer(macs=10)], f) is None
    assert FACTORS.usable


def test_predict_memory_mb(costs):
    params = sum(p.numel() for p in Hand().parameters())
    layers = list(costs.values())
    peak = max(c.input_elems + c.output_elems for c in layers)
    assert peak == 8 * 64 + 8 * 64  # the depthwise conv: 8x8x8 in and out
    for bpe in (4, 2, 1):
        assert predict_memory_mb(layers, params, bpe) == pytest.approx((params + peak) * bpe / 2**20)
    assert predict_memory_mb([], 1024 * 1024, 4) == pytest.approx(4.0)
    assert predict_memory_mb(layers, params, 4) > predict_memory_mb(layers, params - 100, 4)


# ---- factors from device profiles ----------------------------------------------------------------

def test_factors_from_jetson_nano():
    f = factors_from_profile(load_profile("jetson-nano"))
    assert f.peak_gflops == 471.6  # fp16 peak, since the runtime precision is fp16
    assert f.bandwidth_gbps == 25.6
    assert f.bytes_per_element == 2 == BYTES_PER_ELEMENT["fp16"]
    assert (f.compute_efficiency, f.memory_efficiency, f.layer_overhead_ms) == (0.5, 0.6, 0.05)
    assert f.fitted is False and f.source and f.usable
    # ResNet-20 on the Nano: 20 layers of overhead plus compute; a small positive number of ms
    from compress.archs import get_arch

    costs = layer_costs(get_arch("resnet20").factory().eval(), torch.randn(1, 3, 32, 32))
    ms = predict_latency_ms(costs, f)
    assert 20 * 0.05 < ms < 20 * 0.05 + 10


def test_factors_from_host_are_not_usable():
    f = factors_from_profile(load_profile("host"))
    assert f.peak_gflops is None and f.bandwidth_gbps is None
    assert not f.usable and f.bytes_per_element == 4
    assert predict_latency_ms([_layer(macs=1000)], f) is None


@pytest.mark.parametrize("precision,peak,bpe", [("int8", 20.0 * 1000, 1), ("fp32", 1280.0, 4)])
def test_factors_follow_the_runtime_precision(tmp_path, precision, peak, bpe):
    path = tmp_path / f"orin-{precision}.yaml"
    path.write_text(f"extends: jetson-orin-nano\nruntime:\n  precision: {precision}\n")
    f = factors_from_profile(load_profile(path))
    assert f.peak_gflops == peak and f.bytes_per_element == bpe


def test_int8_without_int8_peak_falls_back_to_fp32(tmp_path):
    path = tmp_path / "nano-int8.yaml"
    path.write_text("extends: jetson-nano\nruntime:\n  precision: int8\n")
    f = factors_from_profile(load_profile(path))
    assert f.peak_gflops == 235.8 and f.bytes_per_element == 1
