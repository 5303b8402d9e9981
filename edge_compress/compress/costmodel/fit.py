"""Fitting a profile's cost-model factors: to networks measured here (host: randomly pruned ResNet-20/56
variants, see variants.py and measure.py), or to published latencies (published.py).

Least squares on the relative error of the network latencies over the free factors (bounded: efficiency
<= 1, overheads >= 0); `fit_for_target` returns the fit and the profile's `cost_model:` block.
"""
from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass

import numpy as np
import torch

from .measure import measure_layers_host, measure_reference_rates
from .model import LAYER_KINDS, CostFactors, factors_from_profile, layer_costs, layer_times_ms
from .profile_block import cost_model_block
from .published import NANO_PUBLISHED_MS, NANO_SOURCE, PUBLISHED, PUBLISHED_NETWORKS
from .sample import Sample

HOST_FREE = ("compute_efficiency", "layer_overhead_ms", "network_overhead_ms")
HOST_ALIGNMENTS = (1, 4, 8, 16)
HOST_NOTES = (
    "memory_efficiency is not fitted: at batch 1 no layer of the measured nets is memory-bound here.",
    "channel_alignment 16 is ONNX Runtime's NCHWc block on AVX-512: e.g. 20 channels cost as much as 32.",
    "Latency is the median of the measuring thread's CPU time (one intra-op thread), which on a quiet",
    "machine equals the wall-clock median and on a loaded one leaves out waiting for a core.",
)


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
    from .model import predict_latency_ms

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
    from ..archs import get_arch

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
        from ..errors import InputError

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




def fit_for_target(target, samples: int = 24, seed: int = 0) -> tuple[FitResult, str]:
    """Fit the factors of `target` (a profile name or file, or a loaded profile); returns the fit and the
    cost_model YAML block to store."""
    from edge_compress.deploy import cpu_fingerprint, environment_info
    from edge_compress.device_profiles import load_profile

    from ..errors import InputError

    profile = load_profile(target) if isinstance(target, str) else target
    target = target if isinstance(target, str) else profile.name
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


