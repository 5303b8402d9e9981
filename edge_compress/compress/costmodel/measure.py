"""Measuring networks on this machine for the host fit: each exported to ONNX and timed with the
evaluator's runner and interleaved timing (``deploy.measure_interleaved``), the models taking turns in a
new seeded order every block, so that a slow spell of the shared machine hits all of them alike.
"""
from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from edge_compress.deploy import RunnerConfig, make_runner, measure_interleaved
from edge_compress.export import export_onnx

from .model import layer_costs
from .sample import Sample
from .variants import random_variants


def host_cpu_config(threads: int | None) -> RunnerConfig:
    """ONNX Runtime on this machine's CPU at `threads` intra-op threads: what the host fit measures."""
    return RunnerConfig(engine="onnxruntime", precision="fp32", method="local", providers=("CPUExecutionProvider",),
                        threads=threads, require_provider=True)


def measure_onnx_medians(paths: list[Path], example: np.ndarray, threads: int | None = 1, warmup: int = 20,
                         rounds: int = 20, runs_per_round: int = 20) -> list[dict]:
    """Latency statistics of each ONNX model with ONNX Runtime CPU, the models interleaved in blocks of
    `runs_per_round` runs, `rounds` blocks each, in a new seeded order every block.

    Besides the wall-clock statistics the calling thread's CPU time is kept (`cpu_median_ms`,
    `cpu_min_ms`): with one intra-op thread ONNX Runtime computes on the calling thread, so CPU time
    leaves out the time the thread waited for a core, which on a loaded machine moves the wall-clock median.
    """
    config = host_cpu_config(threads)
    with contextlib.ExitStack() as stack:
        runners = [stack.enter_context(make_runner(p, config)) for p in paths]
        feeds = [{r.input_names[0]: example} for r in runners]
        stats = measure_interleaved(runners, feeds, warmup_runs=warmup, timed_runs=rounds * runs_per_round,
                                    block=runs_per_round, shuffle_seed=0)
        return [{**st.to_dict(), "cpu_median_ms": float(np.median(r.cpu_samples_ms)),
                 "cpu_min_ms": float(np.min(r.cpu_samples_ms))} for st, r in zip(stats, runners)]


def measure_models(models: list[tuple[dict, nn.Module]], example_input: torch.Tensor, opset: int = 17,
                   threads: int | None = 1, clock: str = "cpu", **timing) -> list[Sample]:
    """Export each model, measure all of them interleaved, return (description, layer costs, median ms).
    `clock`: which median becomes `measured_ms`, "cpu" (the thread's CPU time) or "wall"; both are kept
    in the description."""
    key = {"cpu": "cpu_median_ms", "wall": "median_ms"}[clock]
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

    from ..archs import get_arch

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
    from ..model_io import load_model

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


