"""The analytic cost model: per-layer MACs on a hand-computable net, latency and memory predictions,
and the factors it reads from device profiles."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn

from edge_compress.compress.costmodel.model import (
    BYTES_PER_ELEMENT,
    CostFactors,
    LayerCost,
    factors_from_profile,
    layer_costs,
    padded_macs,
    predict_latency_ms,
    predict_layer_ms,
    predict_memory_mb,
)
from edge_compress.compress.costmodel.explain import explain, profile_layers_ort
from edge_compress.compress.costmodel.fit import fit_factors
from edge_compress.compress.costmodel.profile_block import write_cost_model
from edge_compress.compress.costmodel.published import NANO_PUBLISHED_MS
from edge_compress.compress.costmodel.sample import Sample
from edge_compress.compress.costmodel.variants import random_variants, variants_of
from edge_compress.device_profiles import ProfileError, load_profile


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
    from edge_compress.compress.archs import get_arch

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
    assert predict_memory_mb([], 1024 * 1024, 4, runtime_overhead_mb=100) == pytest.approx(104.0)
    assert predict_memory_mb(layers, params, 4) > predict_memory_mb(layers, params - 100, 4)


# ---- factors from device profiles ----------------------------------------------------------------

def test_factors_from_jetson_nano():
    f = factors_from_profile(load_profile("jetson-nano"))
    assert f.peak_gflops == 471.6  # fp16 peak, since the runtime precision is fp16
    assert f.bandwidth_gbps == 25.6
    assert f.bytes_per_element == 2 == BYTES_PER_ELEMENT["fp16"]
    cm = load_profile("jetson-nano").cost_model
    assert (f.compute_efficiency, f.memory_efficiency, f.layer_overhead_ms) == (
        cm.compute_efficiency, cm.memory_efficiency, cm.layer_overhead_ms)
    assert f.efficiency("conv_1x1") == cm.kind_efficiency.conv_1x1 < f.efficiency("conv_kxk")
    assert f.fitted is True and cm.fit.samples == 3 and len(cm.fit.free_factors) <= 3 and f.usable
    # ResNet-20 (41 M MACs) on the Nano: the overheads plus well under a millisecond of compute
    from edge_compress.compress.archs import get_arch

    costs = layer_costs(get_arch("resnet20").factory().eval(), torch.randn(1, 3, 32, 32))
    overhead = f.network_overhead_ms + 20 * f.layer_overhead_ms
    assert overhead < predict_latency_ms(costs, f) < overhead + 1


def test_factors_from_host_use_the_cost_models_reference_rates():
    profile = load_profile("host")
    assert profile.hardware.fp32_gflops.value is None  # the chip's peak stays unknown ...
    f = factors_from_profile(profile)
    # ... the efficiencies are fractions of the one-thread rate measured by the fit
    assert f.peak_gflops == profile.cost_model.reference_gflops.value > 0
    assert f.bandwidth_gbps == profile.cost_model.reference_gbps.value > 0
    assert f.usable and f.fitted and f.bytes_per_element == 4 and f.channel_alignment == 16
    assert profile.cost_model.fit.share_within_10pct >= 0.9


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


# ---- layer kinds, channel alignment, network overhead ----------------------------------------------

def test_layer_kinds(costs):
    assert [c.cost_kind for c in costs.values()] == ["conv_kxk", "depthwise", "conv_1x1", "linear"]
    assert costs["conv"].kernel_elems == 9 and costs["dw"].groups == 8


def test_channel_alignment_pads_channels_but_not_narrow_inputs():
    conv = LayerCost("c", "Conv2d", 20, 20, 20 * 20 * 9 * 64, 0, 0, 0, kernel_elems=9)
    assert padded_macs(conv, 1) == conv.macs
    assert padded_macs(conv, 16) == conv.macs * (32 / 20) * (32 / 20)
    narrow_in = LayerCost("c", "Conv2d", 4, 16, 4 * 16 * 9 * 64, 0, 0, 0, kernel_elems=9)
    assert padded_macs(narrow_in, 16) == narrow_in.macs  # a 4-channel input is read unpadded
    fc = LayerCost("fc", "Linear", 20, 10, 200, 210, 20, 10)
    assert padded_macs(fc, 16) == 200
    # a depthwise cost scaled down for pruning while keeping its original groups stays depthwise
    dw = LayerCost("dw", "Conv2d", 20, 20, 20 * 9 * 64, 180, 0, 0, kernel_elems=9, groups=32)
    assert dw.cost_kind == "depthwise" and padded_macs(dw, 16) == dw.macs * 32 / 20


def test_kind_efficiency_and_network_overhead():
    f = CostFactors(1.0, 1e9, 0.5, 1.0, 0.0, 4, False, "test", {"conv_1x1": 0.25}, network_overhead_ms=2.0)
    kxk = LayerCost("a", "Conv2d", 1, 1, 1000, 0, 0, 0, kernel_elems=9)
    one = LayerCost("b", "Conv2d", 1, 1, 1000, 0, 0, 0, kernel_elems=1)
    assert predict_layer_ms(one, f) == pytest.approx(2 * predict_layer_ms(kxk, f))
    assert predict_latency_ms([kxk, one], f) == pytest.approx(2.0 + 0.004 + 0.008)
    assert predict_latency_ms([], f) == 2.0


# ---- fitting -------------------------------------------------------------------------------------

def _synthetic_samples(f: CostFactors, n: int = 30, seed: int = 0) -> list[Sample]:
    """Random conv nets (3x3, 1x1, FC layers of random widths and sizes), timed by the model itself."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        costs = []
        for j in range(int(rng.integers(3, 40))):
            cin, cout = (int(v) for v in rng.integers(4, 257, 2))
            hw = int(rng.choice([4, 8, 16, 32]))
            k = int(rng.choice([1, 9]))
            costs.append(LayerCost(f"l{j}", "Conv2d", cin, cout, cin * cout * k * hw * hw, cin * cout * k,
                                   cin * hw * hw, cout * hw * hw, kernel_elems=k))
        fin, fout = (int(v) for v in rng.integers(256, 4097, 2))
        costs.append(LayerCost("fc", "Linear", fin, fout, fin * fout, fin * fout + fout, fin, fout))
        out.append(Sample({"index": i}, costs, 0.0))
    return [Sample(s.description, s.costs, predict_latency_ms(s.costs, f)) for s in out]


def test_fit_recovers_known_factors_from_synthetic_data():
    truth = CostFactors(200.0, 20.0, 0.7, 0.4, 0.003, 4, False, "truth", {"conv_1x1": 0.35},
                        network_overhead_ms=0.02, channel_alignment=8)
    samples = _synthetic_samples(truth)
    start = CostFactors(200.0, 20.0, 0.5, 0.6, 0.01, 4, False, "start", {}, network_overhead_ms=0.001)
    free = ("compute_efficiency", "kind_efficiency.conv_1x1", "memory_efficiency", "layer_overhead_ms",
            "network_overhead_ms")
    result = fit_factors(samples, start, free, alignments=(1, 8, 16))
    f = result.factors
    assert f.channel_alignment == 8 and f.fitted
    assert f.compute_efficiency == pytest.approx(0.7, rel=1e-3)
    assert f.efficiency("conv_1x1") == pytest.approx(0.35, rel=1e-3)
    assert f.memory_efficiency == pytest.approx(0.4, rel=1e-3)
    assert f.layer_overhead_ms == pytest.approx(0.003, rel=1e-2)
    assert f.network_overhead_ms == pytest.approx(0.02, rel=5e-2)
    assert result.stats()["max_abs_error_pct"] < 0.1 and result.free_factors[-1] == "channel_alignment"


def test_fit_rejects_unknown_factor_names():
    f = CostFactors(1.0, 1.0, 0.5, 0.5, 0.1, 4, False, "t")
    with pytest.raises(ValueError, match="unknown free factors"):
        fit_factors(_synthetic_samples(f, 3), f, ("peak_gflops",))


# ---- Jetson Nano against its published latencies ------------------------------------------------

@pytest.mark.parametrize("arch", sorted(NANO_PUBLISHED_MS))
def test_nano_predictions_within_20pct_of_published(arch):
    from edge_compress.compress.archs import get_arch

    f = factors_from_profile(load_profile("jetson-nano"))
    with torch.device("meta"):  # shapes are all the cost model needs
        model = get_arch(arch).factory().eval()
    ms = predict_latency_ms(layer_costs(model, torch.zeros(1, 3, 224, 224, device="meta")), f)
    assert ms == pytest.approx(NANO_PUBLISHED_MS[arch], rel=0.2)


# ---- ImageNet ResNets ----------------------------------------------------------------------------

@pytest.mark.parametrize("arch,params", [("resnet18", 11_689_512), ("resnet34", 21_797_672),
                                         ("resnet50", 25_557_032)])
def test_imagenet_resnets_match_torchvision(arch, params):
    from edge_compress.compress.archs import get_arch

    info = get_arch(arch)
    assert info.input_shape == (3, 224, 224) and info.num_classes == 1000
    with torch.device("meta"):
        model = info.factory().eval()
    assert sum(p.numel() for p in model.parameters()) == params
    keys = set(model.state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.running_mean", "layer4.1.bn2.num_batches_tracked", "fc.weight", "fc.bias"} <= keys
    # only the bottleneck widens the stream in layer1, so only ResNet-50 has a downsample there
    assert any(k.startswith("layer1.0.downsample") for k in keys) == (arch == "resnet50")
    assert model(torch.zeros(1, 3, 224, 224, device="meta")).shape == (1, 1000)
    if arch == "resnet18":  # one real forward pass; the shapes above hold for all three
        with torch.no_grad():
            assert info.factory().eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


# ---- the profile's cost-model keys ---------------------------------------------------------------

def _host_with(tmp_path, cost_model: dict):
    import yaml

    data = load_profile("host").to_dict()
    data["cost_model"] = {**data["cost_model"], **cost_model}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("change,fragments", [
    ({"kind_efficiency": {"conv_3x3": 0.5}}, ["unknown key 'cost_model.kind_efficiency.conv_3x3'"]),
    ({"kind_efficiency": {"linear": 1.5}}, ["key 'cost_model.kind_efficiency.linear'", "(0, 1]"]),
    ({"channel_alignment": 0}, ["key 'cost_model.channel_alignment'", ">= 1"]),
    ({"network_overhead_ms": -1}, ["key 'cost_model.network_overhead_ms'"]),
    ({"fit": None}, ["missing key 'cost_model.fit'", "fitted is true"]),
    ({"fitted": False}, ["key 'cost_model.fit' is given but cost_model.fitted is false"]),
    ({"fit": {"data": "x", "date": "21.11.2026", "samples": 3, "free_factors": ["compute_efficiency"],
              "median_abs_error_pct": 1, "max_abs_error_pct": 2, "share_within_10pct": 1}},
     ["key 'cost_model.fit.date'", "YYYY-MM-DD"]),
    ({"fit": {"data": "x", "date": "2026-11-21", "samples": 3, "free_factors": ["peak"],
              "median_abs_error_pct": 1, "max_abs_error_pct": 2, "share_within_10pct": 1}},
     ["key 'cost_model.fit.free_factors'"]),
    ({"fit": {"data": "x", "date": "2026-11-21", "samples": 3, "free_factors": ["compute_efficiency"]}},
     ["missing required key 'cost_model.fit.median_abs_error_pct'"]),
    ({"reference_gflops": {"value": "fast", "source": "x", "confidence": "measured"}},
     ["key 'cost_model.reference_gflops.value'"]),
])
def test_profile_loader_rejects_malformed_cost_model_keys(tmp_path, change, fragments):
    path = _host_with(tmp_path, change)
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_write_cost_model_replaces_the_block_and_keeps_the_rest(tmp_path):
    from edge_compress.compress.costmodel.fit import FitResult
    from edge_compress.compress.costmodel.profile_block import cost_model_block

    path = tmp_path / "mine.yaml"
    path.write_text("# my device\nextends: host\nname: mine\n")
    f = dataclasses.replace(factors_from_profile(load_profile("host")), compute_efficiency=0.42, fitted=True)
    block = cost_model_block(FitResult(f, ("compute_efficiency",), [1.0], [1.1]), "test data", "cmd", "test")
    write_cost_model(path, block)
    write_cost_model(path, block)  # a refit replaces, never appends
    text = path.read_text()
    assert text.startswith("# my device\n") and text.count("cost_model:") == 1
    cm = load_profile(str(path)).cost_model
    assert cm.compute_efficiency == 0.42 and cm.fit.data == "test data" and cm.fit.samples == 1
    before = path.read_text()
    with pytest.raises(ProfileError):
        write_cost_model(path, block.replace("compute_efficiency: 0.42", "compute_efficiency: 4.2"))
    assert path.read_text() == before  # a block that does not load is never written


# ---- variants and explain ------------------------------------------------------------------------

def test_resnet_variants_narrow_every_prunable_group_to_random_widths():
    x = torch.randn(2, 3, 32, 32)
    (desc, small), = random_variants("resnet20", 1, seed=3)
    widths = desc["widths"]
    assert desc["arch"] == "resnet20" and len(widths) == 12   # 9 inner convs and the 3 stages' residual streams
    assert all(w % 4 == 0 and w >= 4 for w in widths.values())
    assert small.layer2[1].conv1.out_channels == widths["layer2.1.conv1"] == small.layer2[1].conv2.in_channels
    assert small(x).shape == (2, 10)


class _Renamed(nn.Module):
    """Layer names unlike ResNet's conv1/bn1/conv2: variants must not depend on names."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5))

    def forward(self, x):
        return self.head(self.mix(self.stem(x)))


def test_variants_prune_any_network_by_its_groups():
    variants = variants_of(_Renamed, (3, 8, 8), count=3, seed=0)
    x = torch.randn(1, 3, 8, 8)
    for desc, model in variants:
        assert set(desc["widths"]) == {"stem.0", "mix.0"}
        assert model.stem[0].out_channels == desc["widths"]["stem.0"] == model.mix[0].in_channels
        assert model.mix[0].out_channels == desc["widths"]["mix.0"] == model.head[2].in_features
        assert model(x).shape == (1, 5)
    assert len({tuple(d["widths"].values()) for d, _ in variants}) > 1   # random, not all alike


def test_explain_has_one_row_per_conv_and_linear_layer():
    model = Hand().eval()
    costs = layer_costs(model, X)
    measured = {"conv": 0.01, "fc": 0.002}
    rows = explain(model, (3, 8, 8), "host", measured)
    assert [r["name"] for r in rows] == [c.name for c in costs]
    assert all(r["predicted_ms"] > 0 and r["bound"] in ("compute", "memory") for r in rows)
    assert rows[0]["measured_ms"] == 0.01 and rows[0]["error_pct"] == pytest.approx(
        100 * (rows[0]["predicted_ms"] / 0.01 - 1))
    assert rows[1]["measured_ms"] is None and rows[1]["error_pct"] is None


def test_profile_layers_ort_maps_onnx_nodes_to_layers():
    measured, meta = profile_layers_ort(Hand().eval(), X, runs=3)
    assert set(measured) == {"conv", "dw", "pw", "fc"}, meta
    assert all(v >= 0 for v in measured.values())
    assert meta["mapping"].startswith("by execution order")
