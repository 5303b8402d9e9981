"""Fitting a profile's cost-model factors, and showing predicted vs measured latency per layer.

Host: randomly pruned ResNet-20/56 variants measured here with ONNX Runtime (the profile's threads,
batch 1, interleaved), factors fitted by least squares on the relative error. Targets that cannot be
measured from here are fitted to published latencies (PUBLISHED: one table per target, with its source):
Jetson Nano to TensorRT FP16 ResNet-18/34/50 (three numbers, three free factors), Raspberry Pi 4 and 5
to ONNX Runtime CPU latencies of three networks with two free factors, two more networks held out.
Two commands for the CLI: `fit-cost-model` and `cost-model` (see `main`).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .cost_model import LAYER_KINDS, CostFactors, LayerCost, factors_from_profile, layer_costs, layer_times_ms

HOST_FREE = ("compute_efficiency", "layer_overhead_ms", "network_overhead_ms")
HOST_ALIGNMENTS = (1, 4, 8, 16)
NANO_FREE = ("compute_efficiency", "kind_efficiency.conv_1x1", "network_overhead_ms")
# NVIDIA-AI-IOT/torch2trt docs/benchmarks/jetson_nano.md: TensorRT FP16, batch 1, 224x224, MAXN.
NANO_PUBLISHED_MS = {"resnet18": 11.4, "resnet34": 20.2, "resnet50": 29.8}
NANO_SOURCE = "torch2trt docs/benchmarks/jetson_nano.md (TensorRT FP16, batch 1, 224x224, MAXN)"
HOST_NOTES = (
    "memory_efficiency is not fitted: at batch 1 no layer of the measured nets is memory-bound here.",
    "channel_alignment 16 is ONNX Runtime's NCHWc block on AVX-512: e.g. 20 channels cost as much as 32.",
    "Latency is the median of the measuring thread's CPU time (one intra-op thread), which on a quiet",
    "machine equals the wall-clock median and on a loaded one leaves out waiting for a core.",
)
NANO_NOTES = (
    "3 numbers, 3 free factors: on the fit points this is a consistency check, not a validation.",
    "layer_overhead_ms is held at 0: three network latencies cannot tell it from network_overhead_ms.",
    "Fitting it instead of network_overhead_ms pins compute_efficiency at its bound 1 (ResNet-18 -> 34",
    "is 1.77x the time for 2.02x the MACs) and does worse out of sample (AlexNet -21 %, VGG-16 -2 %);",
    "with network_overhead_ms: VGG-16 +8 %, AlexNet -9 % (benchmarks/cost_model_accuracy.py). The",
    "2.6 ms per call is plausible for torch2trt's timing from Python with a CUDA sync on the Nano's CPU;",
    "a bare trtexec run likely pays less. memory_efficiency is not fitted (no ResNet layer is memory-bound).",
)


# Raspberry Pi 4 / 5: ONNX Runtime CPU EP, FP32, default session options (one thread per core: 4),
# timm models (ShuffleNetV2: torchvision) exported with torch.onnx.export, batch 1, 1x3x224x224, mean of
# 10 runs after 1 warm-up (timed with time.time()); names as the benchmark spells them.
_ISPC = ("ispcojp/ai_inference_device_benchmark {file} (commit 47c6e00, 2025-02-25; script "
         "classification/benchmark_ort.py): ONNX Runtime CPU EP, FP32, default session options (4 threads), "
         "batch 1, 1x3x224x224, mean of 10 runs after 1 warm-up")
RPI4_SOURCE = _ISPC.format(file="results/RPi4.md")
RPI5_SOURCE = _ISPC.format(file="results/RPi5.md")
RPI4_PUBLISHED_MS = {"resnet18": 274.989, "mobilenetv2_100": 103.894, "vgg13": 1738.197}
RPI4_HELD_OUT_MS = {"shufflenet_v2_x1_0": 40.200, "mobilenetv2_050": 46.726}
RPI5_PUBLISHED_MS = {"resnet18": 50.285, "mobilenetv2_100": 30.221, "vgg13": 421.593}
RPI5_HELD_OUT_MS = {"shufflenet_v2_x1_0": 9.432, "mobilenetv2_050": 13.970}
RPI_FREE = ("compute_efficiency", "kind_efficiency.depthwise")
# Published network name -> (registered architecture, keyword arguments); other names are registered
# architectures themselves.
PUBLISHED_NETWORKS = {"mobilenetv2_100": ("mobilenet_v2", {}),
                      "mobilenetv2_050": ("mobilenet_v2", {"width_mult": 0.5})}
RPI_NOTES = (
    "Fitted to ONNX Runtime CPU at 4 threads (see fit.data); another runtime, thread count or ORT",
    "version needs its own fit. 3 networks, 2 free factors: compute_efficiency (dense convs, which",
    "dominate ResNet-18 and VGG-13) and kind_efficiency.depthwise: until onnxruntime PR #26688",
    "(Dec 2025) ORT ran FP32 depthwise convs on ARM64 as Im2Col + SGEMM with K=9, far below the dense",
    "rate; a newer ORT is likely faster on MobileNets. conv_1x1 layers use compute_efficiency.",
    "Kept out of the fit: ShuffleNetV2 x1.0 and MobileNetV2-0.5 (fit.out_of_sample). The factor pair",
    "was chosen with the ShuffleNetV2 error in view; MobileNetV2-0.5 was checked only afterwards.",
    "Tried as the second factor: kind_efficiency.conv_1x1 fits the 3 networks as well but misses",
    "MobileNetV2-0.5 by about -30 % (ShuffleNetV2 by {shufflenet_1x1}); layer_overhead_ms or",
    "network_overhead_ms overpredict ShuffleNetV2 by +98 to +165 %. Both overheads are held at 0: a cost",
    "per operator (e.g. syncing 4 threads) is not identifiable from these nets, so small nets such as",
    "CIFAR ResNet-20 (41 M MACs, far below the fitted 0.3-11 G) are extrapolated, likely too fast.",
    "memory_efficiency (0.6) and channel_alignment (1) are not fitted. The peak only scales the fitted",
    "efficiencies: predictions do not depend on it (see hardware.fp32_gflops). Layer costs: timm's",
    "mobilenetv2_100/_050 as the registered mobilenet_v2 at width_mult 1.0/0.5; vgg13 in torchvision's",
    "layout (timm's ConvMlp head has the same multiply-adds and weights).",
)
RPI4_NOTES = tuple(n.format(shufflenet_1x1="+26 %") for n in RPI_NOTES) + (
    "ResNet-18 (275 ms, slower than PyTorch's 263 ms on the same board) is no outlier of this fit: it",
    "runs at 13.2 GFLOPS, VGG-13 at 13.0. Other runtime, cross-check only: ncnn benchncnn, 4 threads,",
    "1.8 GHz: ResNet-18 123 ms, MobileNetV2 62 ms (Tencent/ncnn benchmark/README.md), 1.7-2.2x faster.",
)
RPI5_NOTES = tuple(n.format(shufflenet_1x1="+52 %") for n in RPI_NOTES) + (
    "Other runtime, cross-check only: ncnn benchncnn, 4 threads, FP16 arithmetic: ResNet-18 20 ms,",
    "MobileNetV2 10.5 ms (Tencent/ncnn benchmark/README.md), 2.5-2.9x faster than these ORT FP32 numbers.",
)


@dataclass(frozen=True)
class PublishedTable:
    """Published latencies of one target and how its factors are fitted to them.

    `fitted_ms` are the networks the fit sees, `held_out_ms` those it must not see (their errors are the
    out-of-sample check); `start` holds factor values that the fit starts from (free factors) or keeps
    (the others)."""

    fitted_ms: dict[str, float]
    held_out_ms: dict[str, float]
    source: str
    free: tuple[str, ...]
    start: dict[str, float] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()


# Depthwise efficiency starts low: a kind whose layers are all memory-bound at the start leaves its
# efficiency unconstrained, and the fit would keep it where it started.
_RPI_START = {"layer_overhead_ms": 0.0, "network_overhead_ms": 0.0, "kind_efficiency.depthwise": 0.05}
PUBLISHED = {
    "jetson-nano": PublishedTable(NANO_PUBLISHED_MS, {}, NANO_SOURCE, NANO_FREE, {"layer_overhead_ms": 0.0},
                                  NANO_NOTES),
    "raspberry-pi-4": PublishedTable(RPI4_PUBLISHED_MS, RPI4_HELD_OUT_MS, RPI4_SOURCE, RPI_FREE, _RPI_START,
                                     RPI4_NOTES),
    "raspberry-pi-5": PublishedTable(RPI5_PUBLISHED_MS, RPI5_HELD_OUT_MS, RPI5_SOURCE, RPI_FREE, _RPI_START,
                                     RPI5_NOTES),
}


@dataclass
class Sample:
    """One measured (or published) network: what it was, its layers, and its median latency."""

    description: dict
    costs: list[LayerCost]
    measured_ms: float

    def to_dict(self) -> dict:
        return {"description": self.description, "measured_ms": self.measured_ms,
                "costs": [c.to_dict() for c in self.costs]}


# ---- models to measure ---------------------------------------------------------------------------

def _inner_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    # Blocks whose conv1 -> bn1 -> conv2 chain can be narrowed without touching the residual stream.
    return [(n, m) for n, m in model.named_modules()
            if isinstance(getattr(m, "conv1", None), nn.Conv2d) and isinstance(getattr(m, "bn1", None), nn.BatchNorm2d)
            and isinstance(getattr(m, "conv2", None), nn.Conv2d) and m.conv1.out_channels == m.conv2.in_channels
            and m.conv1.groups == m.conv2.groups == 1]


def prune_inner_channels(model: nn.Module, widths: dict[str, int], seed: int = 0) -> nn.Module:
    """Keep `widths[block]` randomly chosen inner channels of each residual block, in place."""
    gen = torch.Generator().manual_seed(seed)
    for name, block in _inner_blocks(model):
        k = widths.get(name, block.conv1.out_channels)
        idx = torch.sort(torch.randperm(block.conv1.out_channels, generator=gen)[:k]).values
        c1, bn, c2 = block.conv1, block.bn1, block.conv2
        c1.weight = nn.Parameter(c1.weight.data[idx].clone())
        if c1.bias is not None:
            c1.bias = nn.Parameter(c1.bias.data[idx].clone())
        c1.out_channels = k
        for attr in ("weight", "bias"):
            setattr(bn, attr, nn.Parameter(getattr(bn, attr).data[idx].clone()))
        bn.running_mean, bn.running_var, bn.num_features = bn.running_mean[idx].clone(), bn.running_var[idx].clone(), k
        c2.weight = nn.Parameter(c2.weight.data[:, idx].clone())
        c2.in_channels = k
    return model


def random_widths(model: nn.Module, rng: np.random.Generator, multiple: int = 4,
                  min_channels: int = 4) -> dict[str, int]:
    """Random inner widths: one overall level per variant, scattered per block, so that variants span
    light to heavy pruning and no two blocks need to agree."""
    level = rng.uniform(0.1, 1.0)
    out = {}
    for name, block in _inner_blocks(model):
        c = block.conv1.out_channels
        keep = float(np.clip(level + rng.normal(0, 0.25), 0.0, 1.0))
        out[name] = int(min(c, max(min(min_channels, c), round(keep * c / multiple) * multiple)))
    return out


def random_variants(arch: str, count: int, seed: int, state_dict: dict | None = None, multiple: int = 4,
                    min_channels: int = 4) -> list[tuple[dict, nn.Module]]:
    from .archs import get_arch

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        model = get_arch(arch).factory().eval()
        if state_dict is not None:
            model.load_state_dict(state_dict)
        widths = random_widths(model, rng, multiple, min_channels)
        prune_inner_channels(model, widths, seed=seed * 1000 + i)
        out.append(({"arch": arch, "seed": seed, "index": i, "widths": widths}, model))
    return out


# ---- measuring on this machine -------------------------------------------------------------------

def measure_onnx_medians(paths: list[Path], example: np.ndarray, threads: int | None = 1, warmup: int = 20,
                         rounds: int = 20, runs_per_round: int = 20) -> list[dict]:
    """Latency statistics of each ONNX model with ONNX Runtime CPU, the models interleaved round by
    round (A B C A B C ...), so that a slow spell of the shared machine hits all of them alike.

    Besides the wall-clock statistics (as Runner.measure takes them) the calling thread's CPU time is
    recorded: with one intra-op thread ONNX Runtime computes on the calling thread, so CPU time leaves
    out the time the thread waited for a core, which on a loaded machine moves the wall-clock median.
    """
    from edge_compress.deploy import LatencyStats, OrtRunner

    runners = [OrtRunner(p, providers=("CPUExecutionProvider",), threads=threads, require_provider=True)
               for p in paths]
    wall: list[list[float]] = [[] for _ in paths]
    cpu: list[list[float]] = [[] for _ in paths]
    try:
        for r in runners:
            r.activate()
            feed = {r.input_names[0]: example}
            for _ in range(warmup):
                r.infer(feed)
        order = np.random.default_rng(0)
        for _ in range(rounds):
            for i in order.permutation(len(runners)):
                r = runners[i]
                feed = {r.input_names[0]: example}
                for _ in range(runs_per_round):
                    c0 = time.thread_time()
                    r.infer(feed)
                    cpu[i].append((time.thread_time() - c0) * 1e3)
                    wall[i].append(r.last_inference_time_ms)
        out = []
        for w, c, r in zip(wall, cpu, runners):
            st = LatencyStats.from_samples(w, warmup_runs=warmup, batch_size=example.shape[0], runtime=r.runtime,
                                           provider=r.provider, threads=threads, where=r.where).to_dict()
            out.append({**st, "cpu_median_ms": float(np.median(c)), "cpu_min_ms": float(np.min(c))})
        return out
    finally:
        for r in runners:
            if r.is_active:
                r.deactivate()


def measure_models(models: list[tuple[dict, nn.Module]], example_input: torch.Tensor, opset: int = 17,
                   threads: int | None = 1, clock: str = "cpu", **timing) -> list[Sample]:
    """Export each model, measure all of them interleaved, return (description, layer costs, median ms).
    `clock`: which median becomes `measured_ms`, "cpu" (the thread's CPU time) or "wall"; both are kept
    in the description."""
    key = {"cpu": "cpu_median_ms", "wall": "median_ms"}[clock]
    from edge_compress.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="costfit-") as tmp:
        paths = []
        for i, (_, model) in enumerate(models):
            paths.append(Path(tmp) / f"m{i}.onnx")
            export_onnx(model.eval(), example_input, paths[-1], opset=opset)
        stats = measure_onnx_medians(paths, example_input.numpy(), threads, **timing)
    return [Sample({**desc, "latency": st}, layer_costs(model.eval(), example_input), st[key])
            for (desc, model), st in zip(models, stats)]


def measure_layers_host(archs: tuple[str, ...] = ("resnet20", "resnet56"), samples: int = 24, seed: int = 0,
                        weights: dict[str, str] | None = None, profile="host", clock: str = "cpu",
                        **timing) -> list[Sample]:
    """Measure `samples` randomly pruned variants (split over `archs`) here, as compress/evaluate.py does:
    ONNX at the profile's opset, ONNX Runtime CPU at the profile's threads, batch 1."""
    from edge_compress.device_profiles import load_profile

    from .archs import get_arch

    profile = load_profile(profile) if isinstance(profile, str) else profile
    models = []
    for j, arch in enumerate(archs):
        sd = _load_weights(weights[arch], arch) if weights and weights.get(arch) else None
        n = samples // len(archs) + (1 if j < samples % len(archs) else 0)
        models += random_variants(arch, n, seed * 100 + j, sd, profile.pruning.channel_multiple,
                                  profile.pruning.min_channels)
    shape = (profile.measurement.batch_size, *get_arch(archs[0]).input_shape)
    return measure_models(models, torch.randn(shape, generator=torch.Generator().manual_seed(seed)),
                          profile.runtime.opset, profile.measurement.threads, clock, **timing)


def _load_weights(path: str, arch: str) -> dict:
    from .model_io import load_model

    return load_model(path, arch, {}, False).module.state_dict()


def measure_reference_rates(threads: int = 1) -> dict[str, float]:
    """The rates the host's efficiencies are fractions of: the best FP32 rate ONNX Runtime reaches here
    on a large 3x3 conv, and the memory copy bandwidth of one thread (numpy copy of 128 MB)."""
    conv = nn.Conv2d(256, 256, 3, padding=1, bias=False)
    x = torch.randn(1, 256, 32, 32)
    (sample,) = measure_models([({}, nn.Sequential(conv))], x, threads=threads, warmup=5, rounds=5, runs_per_round=10)
    gflops = 2 * sample.costs[0].macs / (sample.description["latency"]["cpu_min_ms"] * 1e6)
    a = np.ones(32 * 2**20, dtype=np.float32)
    b = np.empty_like(a)
    times = []
    for _ in range(15):
        t = time.perf_counter()
        np.copyto(b, a)
        times.append(time.perf_counter() - t)
    return {"gflops": round(gflops, 1), "gbps": round(2 * a.nbytes / float(np.median(times)) / 1e9, 1)}


# ---- fitting -------------------------------------------------------------------------------------

@dataclass
class FitResult:
    factors: CostFactors
    free_factors: tuple[str, ...]
    predicted_ms: list[float]
    measured_ms: list[float]
    # Networks kept out of the fit: {"network", "published_ms", "predicted_ms", "error_pct"} each.
    out_of_sample: tuple[dict, ...] = ()

    @property
    def errors_pct(self) -> np.ndarray:
        return 100 * (np.array(self.predicted_ms) / np.array(self.measured_ms) - 1)

    def stats(self) -> dict:
        e = np.abs(self.errors_pct)
        return {"samples": len(e), "median_abs_error_pct": round(float(np.median(e)), 2),
                "max_abs_error_pct": round(float(e.max()), 2),
                "share_within_10pct": round(float((e <= 10).mean()), 3),
                "share_within_20pct": round(float((e <= 20).mean()), 3)}


def get_factor(f: CostFactors, name: str) -> float:
    if name.startswith("kind_efficiency."):
        return f.efficiency(name.split(".", 1)[1])
    return float(getattr(f, name))


def set_factors(f: CostFactors, values: dict[str, float]) -> CostFactors:
    kinds = dict(f.kind_efficiency)
    plain = {}
    for name, v in values.items():
        if name.startswith("kind_efficiency."):
            kinds[name.split(".", 1)[1]] = v
        else:
            plain[name] = int(v) if name == "channel_alignment" else v
    return dataclasses.replace(f, kind_efficiency=kinds, **plain)


def _predict_all(samples: list[Sample], f: CostFactors) -> np.ndarray:
    from .cost_model import predict_latency_ms

    return np.array([predict_latency_ms(s.costs, f) for s in samples])


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min |a x - b| subject to x >= 0 (Lawson-Hanson active set); numpy only, a handful of columns."""
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    a = a / scale
    n = a.shape[1]
    active, x = np.zeros(n, bool), np.zeros(n)
    for _ in range(10 * n + 10):
        w = a.T @ (b - a @ x)
        if active.all() or np.max(np.where(active, -np.inf, w)) <= 1e-12:
            break
        active[int(np.argmax(np.where(active, -np.inf, w)))] = True
        while True:
            z = np.zeros(n)
            z[active] = np.linalg.lstsq(a[:, active], b, rcond=None)[0]
            if (z[active] > 0).all():
                x = z
                break
            neg = active & (z <= 0)
            x = x + np.min(x[neg] / (x[neg] - z[neg])) * (z - x)
            active &= x > 1e-15
    return x / scale


def _efficiency_factor(f: CostFactors, kind: str) -> str:
    name = f"kind_efficiency.{kind}"
    return name if kind in f.kind_efficiency else "compute_efficiency"


def _fit_active_set(samples: list[Sample], base: CostFactors, free: tuple[str, ...], iters: int = 30) -> CostFactors:
    """Least squares on the relative error. Which bound wins in each layer (compute or memory) is fixed
    per pass; with it fixed, a latency is linear in 1/efficiency and in the overheads, so each pass is
    a bounded linear least-squares problem (efficiency <= 1, overheads >= 0). Passes repeat until no
    layer changes sides."""
    y = np.array([s.measured_ms for s in samples])
    free_kinds = {n.split(".", 1)[1] for n in free if n.startswith("kind_efficiency.")}
    f = set_factors(base, {f"kind_efficiency.{k}": base.efficiency(k) for k in free_kinds})
    col = {n: i for i, n in enumerate(free)}
    sides = None
    for _ in range(iters):
        a, rhs = np.zeros((len(y), len(free))), y.copy()
        new_sides = []
        for i, s in enumerate(samples):
            terms = [("network_overhead_ms", 1.0), ("layer_overhead_ms", float(len(s.costs)))]
            for c in s.costs:
                comp, mem = layer_times_ms(c, f)
                new_sides.append(comp >= mem)
                if comp >= mem:
                    name, eff, t = _efficiency_factor(f, c.cost_kind), f.efficiency(c.cost_kind), comp
                else:
                    name, eff, t = "memory_efficiency", f.memory_efficiency, mem
                terms.append((name, t * eff))  # time = coef / efficiency; fitted as coef * (1 + v), v >= 0
            for name, coef in terms:
                if name not in col:
                    rhs[i] -= coef / get_factor(f, name) if "efficiency" in name else coef * get_factor(f, name)
                elif "efficiency" in name:
                    a[i, col[name]] += coef
                    rhs[i] -= coef
                else:
                    a[i, col[name]] += coef
        if new_sides == sides:
            break
        sides = new_sides
        x = _nnls(a / y[:, None], rhs / y)
        values = {}
        for n, j in col.items():
            if not a[:, j].any():
                continue  # no layer of this kind in the data: keep the starting value
            values[n] = float(1 / (1 + x[j]) if "efficiency" in n else x[j])
        f = set_factors(f, values)
    return f


def fit_factors(samples: list[Sample], base: CostFactors, free: tuple[str, ...] = HOST_FREE,
                alignments: tuple[int, ...] | None = None) -> FitResult:
    """Least squares on the relative error of the network latencies, over the `free` factors (names as
    in the profile: compute_efficiency, kind_efficiency.conv_1x1, layer_overhead_ms, ...); the others
    stay as in `base`. `alignments`: channel alignments to try (a small grid; the best fit wins)."""
    if not base.usable:
        raise ValueError("fit_factors needs the peak and bandwidth the efficiencies are fractions of")
    unknown = [n for n in free if n not in _FREE_NAMES]
    if unknown or not free:
        raise ValueError(f"unknown free factors {unknown}; choose from {', '.join(_FREE_NAMES)}")
    best = None
    for a in alignments or (base.channel_alignment,):
        f = _fit_active_set(samples, dataclasses.replace(base, channel_alignment=a), tuple(free))
        pred = _predict_all(samples, f)
        y = np.array([s.measured_ms for s in samples])
        loss = float(((pred / y - 1) ** 2).sum())
        if best is None or loss < best[0]:
            best = (loss, f, pred)
    _, f, pred = best
    names = tuple(free) + (("channel_alignment",) if alignments and len(alignments) > 1 else ())
    return FitResult(dataclasses.replace(f, fitted=True), names, [float(p) for p in pred],
                     [s.measured_ms for s in samples])


_FREE_NAMES = ("compute_efficiency", "memory_efficiency", "layer_overhead_ms", "network_overhead_ms") + tuple(
    f"kind_efficiency.{k}" for k in LAYER_KINDS)


def published_samples(published: dict[str, float] = NANO_PUBLISHED_MS, source: str = NANO_SOURCE) -> list[Sample]:
    """One Sample per published network (name -> ms): its layer costs at its registered input shape,
    batch 1; names in PUBLISHED_NETWORKS map to a registered architecture with arguments."""
    from .archs import get_arch

    out = []
    for name, ms in published.items():
        arch, kwargs = PUBLISHED_NETWORKS.get(name, (name, {}))
        info = get_arch(arch)
        with torch.device("meta"):  # shapes only: no weights to initialise, no arithmetic
            model = info.factory(**kwargs).eval()
        costs = layer_costs(model, torch.zeros(1, *info.input_shape, device="meta"))
        out.append(Sample({"arch": name, "published_ms": ms, "source": source}, costs, ms))
    return out


def fit_published(profile) -> FitResult:
    """Fit the free factors of a target in PUBLISHED to its published latencies, starting from the
    profile's factors; the held-out networks are predicted with the result (FitResult.out_of_sample)."""
    from edge_compress.device_profiles import load_profile

    profile = load_profile(profile) if isinstance(profile, str) else profile
    table = PUBLISHED[profile.name]
    base = set_factors(factors_from_profile(profile), table.start)
    if not base.usable:
        from .errors import InputError

        raise InputError(f"target {profile.name}: the profile lacks the peak compute or memory bandwidth the fitted "
                         "efficiencies are fractions of; set hardware.fp32_gflops (or cost_model.reference_gflops) "
                         "and hardware.memory_bandwidth_gbps")
    result = fit_factors(published_samples(table.fitted_ms, table.source), base, table.free)
    held = published_samples(table.held_out_ms, table.source)
    result.out_of_sample = tuple(
        {"network": s.description["arch"], "published_ms": s.measured_ms, "predicted_ms": round(float(p), 3),
         "error_pct": round(100 * (float(p) / s.measured_ms - 1), 1)}
        for s, p in zip(held, _predict_all(held, result.factors)))
    return result


def fit_nano(profile="jetson-nano") -> FitResult:
    """Jetson Nano: three published latencies, three free factors (3x3 and 1x1 efficiency, overhead per
    call); no degree of freedom is left, so the fit error is no validation (see NANO_NOTES)."""
    return fit_published(profile)


# ---- the profile's cost_model block --------------------------------------------------------------

def cost_model_block(result: FitResult, data: str, command: str, source: str,
                     reference: dict | None = None, notes: tuple[str, ...] = (), machine: dict | None = None) -> str:
    """The YAML text of a fitted `cost_model:` block, provenance included (comments inside the block,
    so that a refit replaces them too); `machine`: the CPU a measured fit ran on (cpu, isa, cores)."""
    f, st = result.factors, result.stats()
    lines = ["cost_model:",
             "  # Efficiencies are fractions of reference_gflops / reference_gbps where given, else of the",
             "  # hardware peak at the runtime precision; channel_alignment pads channels up to the kernels' block.",
             "  # Written by the command in fit.command, with the data, date and error of the fit.",
             *(f"  # {n}" for n in notes),
             f"  compute_efficiency: {f.compute_efficiency:.4g}",
             f"  memory_efficiency: {f.memory_efficiency:.4g}",
             f"  layer_overhead_ms: {round(f.layer_overhead_ms, 6):.4g}",  # below a nanosecond is noise
             f"  network_overhead_ms: {round(f.network_overhead_ms, 6):.4g}"]
    if f.kind_efficiency:
        lines.append("  kind_efficiency:")
        lines += [f"    {k}: {v:.4g}" for k, v in sorted(f.kind_efficiency.items())]
    lines.append(f"  channel_alignment: {f.channel_alignment}")
    for key, fact in (reference or {}).items():
        lines.append(f"  {key}: {{value: {fact['value']}, source: {json.dumps(fact['source'])}, "
                     f"confidence: {fact['confidence']}}}")
    lines += ["  fitted: true", f"  source: {json.dumps(source)}", "  fit:",
              f"    data: {json.dumps(data)}", f"    date: \"{datetime.date.today().isoformat()}\"",
              f"    command: {json.dumps(command)}", f"    samples: {st['samples']}",
              f"    free_factors: [{', '.join(result.free_factors)}]",
              f"    median_abs_error_pct: {st['median_abs_error_pct']}",
              f"    max_abs_error_pct: {st['max_abs_error_pct']}",
              f"    share_within_10pct: {st['share_within_10pct']}"]
    if result.out_of_sample:
        lines.append("    out_of_sample:")
        lines += [f"      - {{network: {o['network']}, published_ms: {o['published_ms']}, "
                  f"predicted_ms: {o['predicted_ms']}, error_pct: {o['error_pct']}}}" for o in result.out_of_sample]
    if machine:
        lines.append(f"    machine: {{cpu: {json.dumps(str(machine['cpu']))}, isa: {machine['isa']}, "
                     f"cores: {machine['cores']}}}")
    return "\n".join(lines) + "\n"


def new_profile_text(profile, path: str | Path, block: str, extends: bool = True) -> str:
    """A complete profile for a file that does not exist yet: `extends:` the fitted built-in target with
    the new cost_model block, or (`extends` false, or a target that is itself a file) all of the target's
    keys written out with the new block."""
    import yaml

    from edge_compress.device_profiles.loader import BUILTIN_DIR

    path = Path(path)
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in path.stem) or "my-profile"
    head = f"# Written by `compress fit-cost-model --target {profile.name}` on {datetime.date.today().isoformat()}.\n"
    if extends and Path(profile.source_file).parent == BUILTIN_DIR:
        return (head + f"schema_version: 1\nextends: {profile.name}\nname: {name}\n"
                f"description: {json.dumps(f'{profile.name} with its cost model refitted (see cost_model.fit)')}\n"
                + block)
    data = {k: v for k, v in profile.to_dict().items() if k not in ("cost_model", "extends")}
    data["name"] = name
    return head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True) + block


def check_writable(path: str | Path) -> None:
    """Raise InputError (one line) unless `path` is an existing regular file or can be created; checked
    before a fit that takes minutes, so a bad --write fails at once."""
    import os

    from .errors import InputError

    path = Path(path)
    if path.is_dir():
        raise InputError(f"--write {path}: is a folder; give a profile file such as {path / 'my-profile.yaml'}")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise InputError(f"--write {path}: the file is not readable and writable; choose another file")
        return
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"--write {path}: cannot create the file ({parent} is not a writable folder); "
                         "choose a writable location")


def write_cost_model(path: str | Path, block: str, profile=None) -> None:
    """Replace the file's top-level `cost_model:` block (or append one), keeping every other line and
    comment; a file that does not exist yet is created as a complete profile of `profile` (the fitted
    target, see new_profile_text). The result must load as a profile before it atomically replaces or
    creates the file."""
    from edge_compress.deploy.atomic import atomic_write_text
    from edge_compress.device_profiles import load_profile

    from .errors import InputError

    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        if profile is None:
            raise InputError(f"--write {path}: the file does not exist; pass an existing profile file") from None
        lines = None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--write {path}: cannot read the file ({getattr(e, 'strerror', None) or e}); "
                         "pass a profile YAML file") from None
    start = next((i for i, ln in enumerate(lines or []) if ln.startswith("cost_model:")), None)
    if lines is None:
        new = new_profile_text(profile, path, block)
    elif start is None:
        new = "".join(lines).rstrip("\n") + "\n" + block
    else:
        end = next((i for i in range(start + 1, len(lines))
                    if lines[i].strip() and not lines[i].startswith(" ")), len(lines))
        new = "".join(lines[:start]) + block + "".join(lines[end:])
    with tempfile.TemporaryDirectory(prefix="costfit-check-") as tmp:
        check = Path(tmp) / path.name  # same name: a built-in's `name` must match its file name
        check.write_text(new, encoding="utf-8")
        loaded = load_profile(str(check))
        if lines is None and loaded.cost_model != _parse_block(block, str(check)):
            # `extends:` merges key by key: a key of the base's cost model that the block leaves out (an
            # optional one) would survive into the new file. Write every key out instead.
            new = new_profile_text(profile, path, block, extends=False)
            check.write_text(new, encoding="utf-8")
            load_profile(str(check))
    try:
        atomic_write_text(path, new)
    except OSError as e:
        raise InputError(f"--write {path}: cannot write the file ({e.strerror or e}); choose a writable location") \
            from None


def _parse_block(block: str, where: str):
    import yaml

    from edge_compress.device_profiles.schema import CostModel, parse_section

    return parse_section(CostModel, yaml.safe_load(block)["cost_model"], where, key="cost_model")


# ---- predicted vs measured per layer -------------------------------------------------------------

CONV_OPS = {"Conv", "FusedConv", "NchwcConv", "ConvTranspose", "Gemm", "FusedGemm", "MatMul", "QLinearConv",
            "ConvInteger", "QLinearMatMul", "MatMulInteger"}


def profile_layers_ort(model: nn.Module, example_input: torch.Tensor, opset: int = 17, threads: int | None = 1,
                       runs: int = 100) -> tuple[dict[str, float], dict]:
    """Per-layer times from ONNX Runtime's own profiler (median per node over `runs`).

    ONNX nodes are mapped to conv/linear layers by execution order (ONNX Runtime fuses BN/ReLU/Add
    into convs and renames some nodes, e.g. `.../Relu_output_0_nchwc`, so names alone do not map);
    each layer also gets the small ops that run after it, up to the next conv (adds, pads, layout
    reorders), because the cost model carries those in its per-layer overhead.
    """
    import onnxruntime as ort

    from edge_compress.deploy.ort_session import session_options
    from edge_compress.export import export_onnx

    costs = layer_costs(model.eval(), example_input)
    with tempfile.TemporaryDirectory(prefix="costfit-prof-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model.eval(), example_input, path, opset=opset)
        opts = session_options(threads, "all")
        opts.enable_profiling, opts.profile_file_prefix = True, str(Path(tmp) / "trace")
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: example_input.numpy()}
        for _ in range(runs):
            sess.run(None, feed)
        trace = json.loads(Path(sess.end_profiling()).read_text())
    nodes: dict[str, tuple[str, list[float]]] = {}
    for ev in trace:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            node = nodes.setdefault(ev["name"][:-len("_kernel_time")], (ev["args"].get("op_name", ""), []))
            node[1].append(ev["dur"])
    order = list(nodes)
    convs = [n for n in order if nodes[n][0] in CONV_OPS]
    meta = {"onnx_conv_nodes": len(convs), "layers": len(costs), "other_ms": 0.0, "runs": runs}
    if len(convs) != len(costs):
        meta["mapping"] = (f"not mapped: ONNX Runtime ran {len(convs)} conv/gemm nodes for {len(costs)} "
                           "conv/linear layers")
        return {}, meta
    out: dict[str, float] = {}
    idx = -1
    for n in order:
        ms = float(np.median(nodes[n][1])) / 1e3
        if nodes[n][0] in CONV_OPS:
            idx += 1
            out[costs[idx].name] = out.get(costs[idx].name, 0.0) + ms
        else:
            meta["other_ms"] += ms
            name = costs[max(idx, 0)].name
            out[name] = out.get(name, 0.0) + ms
    agree = sum(_scope_agrees(node, c.name) for node, c in zip(convs, costs))
    meta["mapping"] = (f"by execution order: {len(costs)} conv/gemm nodes onto {len(costs)} layers; "
                       f"the ONNX scope names agree for {agree} of them")
    return out, meta


def _scope_agrees(node: str, layer: str) -> bool:
    parts = layer.split(".")
    known = set(parts) | {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return all(s in known for s in node.strip("/").split("/")[:-1])


def explain(model: nn.Module, input_shape, profile, measured_per_layer: dict[str, float] | None = None) -> list[dict]:
    """One row per conv/linear layer: the prediction's parts, the bound that wins, and the measured time
    where given (name -> ms, e.g. from `profile_layers_ort`)."""
    from edge_compress.device_profiles import load_profile

    profile = load_profile(profile) if isinstance(profile, str) else profile
    shape = tuple(input_shape)
    if len(shape) == 3:
        shape = (profile.measurement.batch_size, *shape)
    f = factors_from_profile(profile)
    rows = []
    for c in layer_costs(model.eval(), torch.zeros(shape)):
        row = {"name": c.name, "kind": c.cost_kind, "in_channels": c.in_channels, "out_channels": c.out_channels,
               "macs": c.macs, "compute_ms": None, "memory_ms": None, "overhead_ms": f.layer_overhead_ms,
               "predicted_ms": None, "bound": None, "measured_ms": None, "error_pct": None}
        if f.usable:
            comp, mem = layer_times_ms(c, f)
            row.update(compute_ms=comp, memory_ms=mem, predicted_ms=max(comp, mem) + f.layer_overhead_ms,
                       bound="compute" if comp >= mem else "memory")
        m = (measured_per_layer or {}).get(c.name)
        if m is not None:
            row["measured_ms"] = m
            if row["predicted_ms"] is not None and m > 0:
                row["error_pct"] = 100 * (row["predicted_ms"] / m - 1)
        rows.append(row)
    return rows


def _cell(v, spec: str) -> str:
    return f"{'-':>{spec.split('.')[0].lstrip('+')}}" if v is None else format(v, spec)


def format_rows(rows: list[dict]) -> str:
    head = (f"{'layer':<24} {'kind':<9} {'in':>5} {'out':>5} {'MMACs':>8} {'pred ms':>9} {'bound':<7} "
            f"{'meas ms':>9} {'err %':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['name'][:24]:<24} {r['kind']:<9} {r['in_channels']:>5} {r['out_channels']:>5} "
                     f"{r['macs'] / 1e6:>8.2f} {_cell(r['predicted_ms'], '9.4f')} {r['bound'] or '-':<7} "
                     f"{_cell(r['measured_ms'], '9.4f')} {_cell(r['error_pct'], '+7.1f')}")
    return "\n".join(lines)


# ---- the two commands ----------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compress", description="Cost-model commands.")
    sub = p.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit-cost-model", help="fit a profile's cost-model factors and show the fit's error")
    fit.add_argument("--target", required=True, help="host (measured here), or a target fitted to published "
                     f"numbers: {', '.join(PUBLISHED)}")
    fit.add_argument("--samples", type=int, default=24, help="randomly pruned ResNet-20/56 variants to measure")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--write", metavar="PROFILE.yaml", help="write the fitted cost_model block into this file "
                     "(created as a complete profile extending the target if it does not exist)")
    fit.add_argument("--json", action="store_true", help="print the result as JSON")
    show = sub.add_parser("cost-model", help="predicted vs measured latency per layer")
    show.add_argument("--target", required=True)
    show.add_argument("--arch", required=True, help="built-in architecture or package.module:callable")
    show.add_argument("--model", help="weights (a state dict) for --arch; random weights otherwise")
    show.add_argument("--input-shape", help="CxHxW, default: the architecture's")
    show.add_argument("--runs", type=int, default=200, help="profiled runs for the measured column")
    show.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from edge_compress.device_profiles import ProfileError

    from .errors import EXIT_INPUT_ERROR, CompressError

    args = _parser().parse_args(argv)
    try:
        return _fit_command(args) if args.command == "fit-cost-model" else _show_command(args)
    except (CompressError, ProfileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", EXIT_INPUT_ERROR)


def fit_for_target(target: str, samples: int = 24, seed: int = 0) -> tuple[FitResult, str]:
    """Fit the factors of `target`; returns the fit and the cost_model YAML block to store."""
    from edge_compress.deploy import environment_info
    from edge_compress.deploy.environment import cpu_fingerprint
    from edge_compress.device_profiles import load_profile

    from .errors import InputError

    profile = load_profile(target)
    command = f"compress fit-cost-model --target {target} --samples {samples} --seed {seed}"
    if profile.measurement.method == "local":
        if samples < 4:
            raise InputError(f"--samples {samples}: fitting {len(HOST_FREE) + 1} factors needs at least 4 samples")
        ref = measure_reference_rates(profile.measurement.threads or 1)
        base = dataclasses.replace(factors_from_profile(profile), peak_gflops=ref["gflops"], bandwidth_gbps=ref["gbps"])
        measured = measure_layers_host(samples=samples, seed=seed, profile=profile)
        result = fit_factors(measured, base, HOST_FREE, HOST_ALIGNMENTS)
        cpu, today = environment_info().get("cpu_model", "this machine"), datetime.date.today().isoformat()
        where = f"measured by `{command}` on {cpu}, {today}"
        reference = {"reference_gflops": {"value": ref["gflops"], "confidence": "measured", "source":
                                          f"best FP32 rate of ONNX Runtime, {profile.measurement.threads} thread(s), "
                                          f"on a 256->256 3x3 conv at 32x32; {where}"},
                     "reference_gbps": {"value": ref["gbps"], "confidence": "measured", "source":
                                        f"numpy copy of 128 MB, one thread; {where}"}}
        data = (f"{samples} randomly pruned ResNet-20/56 variants (seed {seed}), ONNX Runtime CPU, "
                f"{profile.measurement.threads} thread(s), batch {profile.measurement.batch_size}, median of the "
                "thread's CPU time, interleaved")
        block = cost_model_block(result, data, command, f"fitted to measurements on this machine ({today})", reference,
                                 HOST_NOTES, machine=cpu_fingerprint())
    elif profile.name in PUBLISHED:
        table = PUBLISHED[profile.name]
        result = fit_published(profile)
        n, k = len(table.fitted_ms), len(table.free)
        dof = "no degree of freedom left" if n == k else f"{n - k} degree{'s' if n - k > 1 else ''} of freedom left"
        source = f"fitted to {n} published latencies with {k} free factors ({dof})"
        if table.held_out_ms:
            source += f"; {', '.join(table.held_out_ms)} kept out of the fit (fit.out_of_sample)"
        data = ("published latencies of " + ", ".join(f"{a} {ms} ms" for a, ms in table.fitted_ms.items())
                + ": " + table.source)
        block = cost_model_block(result, data, f"compress fit-cost-model --target {target}", source,
                                 notes=table.notes)
    else:
        raise InputError(f"target {target}: cannot be measured from here and has no published latencies to fit "
                         f"to (those with: {', '.join(PUBLISHED)}); measure on the device and fit there, or keep "
                         "the profile's defaults")
    return result, block


def _fit_command(args) -> int:
    from edge_compress.device_profiles import load_profile

    if args.write:
        check_writable(args.write)
    result, block = fit_for_target(args.target, args.samples, args.seed)
    if args.write:
        write_cost_model(args.write, block, load_profile(args.target))
    if args.json:
        print(json.dumps({"factors": dataclasses.asdict(result.factors), "free_factors": list(result.free_factors),
                          "errors": result.stats(), "predicted_ms": result.predicted_ms,
                          "measured_ms": result.measured_ms, "out_of_sample": list(result.out_of_sample),
                          "written_to": args.write}, indent=2))
    else:
        print(block, end="")
        print(f"# fit: {result.stats()}")
        for o in result.out_of_sample:
            print(f"# out of sample: {o['network']} published {o['published_ms']} ms, predicted "
                  f"{o['predicted_ms']} ms ({o['error_pct']:+.1f} %)")
        print(f"# written to {args.write}" if args.write else "# not written (pass --write PROFILE.yaml)")
    return 0


def _show_command(args) -> int:
    from edge_compress.device_profiles import load_profile

    from .errors import InputError
    from .model_io import load_model, resolve_arch

    profile = load_profile(args.target)
    if args.model:
        loaded = load_model(args.model, args.arch, {}, False)
        if loaded.kind == "torchscript":
            raise InputError(f"{args.model} is TorchScript: its layers cannot be read; pass a state dict with --arch")
        model, info = loaded.module, loaded.arch_info
    else:
        model, info = resolve_arch(args.arch)
    if args.input_shape:
        shape = tuple(int(v) for v in args.input_shape.lower().split("x"))
    elif info is not None:
        shape = info.input_shape
    else:
        raise InputError(f"--arch {args.arch}: input shape unknown; pass --input-shape CxHxW")
    shape = (profile.measurement.batch_size, *shape[-3:])
    measured, meta, total = None, {}, None
    if profile.measurement.method == "local":
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        measured, meta = profile_layers_ort(model, x, profile.runtime.opset, profile.measurement.threads, args.runs)
        (sample,) = measure_models([({}, model)], x, profile.runtime.opset, profile.measurement.threads)
        total = {k: sample.description["latency"][k] for k in ("median_ms", "cpu_median_ms")}
    rows = explain(model, shape, profile, measured or None)
    f = factors_from_profile(profile)
    summary = {"target": profile.name, "arch": args.arch, "input_shape": list(shape), "predicted_ms": None,
               "predicted_label": f"predicted: cost model of profile {profile.name} "
                                  f"({'fitted' if f.fitted else 'NOT fitted'})",
               "measured_ms": total, "per_layer_mapping": meta.get("mapping"), "other_ops_ms": meta.get("other_ms")}
    if f.usable:
        summary["predicted_ms"] = f.network_overhead_ms + sum(r["predicted_ms"] for r in rows)
    if args.json:
        print(json.dumps({"summary": summary, "rows": rows}, indent=2))
    else:
        print(format_rows(rows))
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
