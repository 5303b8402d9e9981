"""How long the information criteria take to score ResNet-56, and how much faster the greedy CMI is than
the straightforward reference implementation (rebuild every Gram for every candidate).

    python benchmarks/metric_speed.py --samples 256 --threads 2 [--reference-layers 3] [--device cpu|cuda]
        [--with-slow] [--json out.json]

1. Pretrained ResNet-56 (../shared/models), N seeded CIFAR-10 *train* images normalised with the arch's
   mean/std by compress.calib.load_calibration, labels from the data; fixed seed.
2. Per criterion: wall time of `criterion.prepare(view, x, y)` (feature capture and scoring) plus reading the
   scores of every prunable group, on a fresh copy of the model; the pruner's analysis is done once.
3. `naive_greedy_cmi` (below) against `compress.metrics.cmi.greedy_cmi` on the first prunable layer of each
   stage (16, 32, 64 channels): same distances, sigma and alpha, so the orders must agree.
4. With --device cuda and a GPU: greedy_cmi on the GPU for the same layers, order checked against CPU.
Timings are wall-clock seconds on whatever else the machine is doing; quote them with the machine info.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from cifar_calib import load_split  # noqa: E402
from edge_compress.compress.calib import load_calibration  # noqa: E402
from edge_compress.compress.criteria.registry import make_criterion  # noqa: E402
from edge_compress.compress.metrics.cmi import CmiConfig, greedy_cmi, layer_distances  # noqa: E402
from edge_compress.compress.metrics.features import collect_features  # noqa: E402
from edge_compress.compress.metrics.renyi import entropy, gram_from_sq_dist, label_gram  # noqa: E402
from edge_compress.compress.model_io import load_model  # noqa: E402
from edge_compress.compress.pruning.pruner import ChannelPruner  # noqa: E402

MODEL = ROOT.parent / "shared" / "models" / "resnet56-4bfd9763.th"
SEED = 0


def configs(with_slow: bool) -> list[tuple[str, dict]]:
    out = [("cmi", {"alpha": 2.0}),
           ("cmi", {"alpha": 2.0, "cutoff": "scree"}),
           ("cmi", {"alpha": 1.01, "cutoff": "scree"})]
    if with_slow:
        out.append(("cmi", {"alpha": 1.01, "cutoff": "permutation"}))
    return out + [("mipp", {}), ("mi-gradient", {}), ("capacity-independence", {}), ("consumer-mi", {}),
                  ("capacity-independence", {"source": "weights"}), ("l1", {}), ("taylor", {})]


def load_data(n: int, arch_info) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_split("train", n, SEED)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "calib.npz"
        np.savez(path, x=images, y=labels)
        calib = load_calibration(str(path), arch_info.input_shape, n, arch_info.mean, arch_info.std, SEED)
    return calib.x, calib.y


def time_criterion(pruner: ChannelPruner, model, name: str, opts: dict, x, y) -> tuple[float, int]:
    """Seconds to prepare criterion `name` and read the scores of every prunable group; groups scored."""
    p, crit = pruner.for_copy(copy.deepcopy(model)), make_criterion(name, opts)
    prunable = {g.root: g for g in p.prunable_groups}
    t0 = time.perf_counter()
    crit.prepare(p.view, x, y)
    scored = 0
    for root, group in p._root_groups():  # noqa: SLF001 - the Torch-Pruning groups the baselines score
        if root in prunable:
            s = crit.scores(p.view, prunable[root], group)
            scored += int(s is not None and len(s) == prunable[root].channels and bool(torch.isfinite(s).all()))
    return time.perf_counter() - t0, scored


def naive_greedy_cmi(d2: torch.Tensor, sigma: float, ky: torch.Tensor, alpha: float) -> tuple[list[int], list[float]]:
    """Greedy CMI ranking of one layer the way the paper's reference code does it.

    For every candidate j at every step, every selected channel's Gaussian Gram is rebuilt from its own
    squared distances, the Grams are Hadamard-multiplied with the candidate's, and I(Y; S u {j}) =
    H(Y) + H(S u {j}) - H(Y, S u {j}) is computed with renyi.entropy. The first maximum wins (as in
    greedy_cmi). Returns the order and the objective of each pick.
    """
    h_y = float(entropy(ky, alpha))
    remaining, order, objective = list(range(d2.shape[0])), [], []
    while remaining:
        gains = []
        for j in remaining:
            k = gram_from_sq_dist(d2[j], sigma)
            for s in order:
                k = k * gram_from_sq_dist(d2[s], sigma)
            gains.append(h_y + float(entropy(k, alpha)) - float(entropy(k * ky, alpha)))
        best = max(range(len(gains)), key=gains.__getitem__)
        order.append(remaining.pop(best))
        objective.append(gains[best])
    return order, objective


def reference_layers(pruner: ChannelPruner, count: int) -> list[str]:
    """The first prunable group root of each channel width (16, 32, 64), in execution order."""
    pos = {n: i for i, n in enumerate(pruner.execution_order())}
    firsts: dict[int, str] = {}
    for g in sorted(pruner.prunable_groups, key=lambda g: pos.get(g.root, len(pos))):
        firsts.setdefault(g.channels, g.root)
    return [firsts[c] for c in sorted(firsts)][:count]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def compare(model, pruner, x, y, args) -> tuple[list[dict], list[dict]]:
    names = reference_layers(pruner, args.reference_layers)
    feats = collect_features(model, x, names)
    ky = label_gram(y)
    rows, gpu_rows = [], []
    for name in names:
        d2, sigma = layer_distances(feats[name].tensor, "median")
        c = d2.shape[0]
        for alpha in (2.0, 1.01):
            cfg = CmiConfig(alpha=alpha, cutoff="none")
            fast, t_fast = timed(lambda: greedy_cmi(d2, sigma, ky, cfg, name=name))
            row = {"layer": name, "channels": c, "alpha": alpha, "greedy_s": t_fast, "naive_s": None}
            if alpha == 2.0 or c <= 16 or args.with_slow:
                torch.set_flush_denormal(True)  # same footing as greedy_cmi (denormals are ~100x slower)
                try:
                    (order, obj), t_naive = timed(lambda: naive_greedy_cmi(d2, sigma, ky, alpha))
                finally:
                    torch.set_flush_denormal(False)
                same = next((i for i, (a, b) in enumerate(zip(order, fast.order)) if a != b), c)
                row.update(naive_s=t_naive, speedup=t_naive / t_fast, identical=order == fast.order,
                           common_prefix=same, naive_order=order, greedy_order=fast.order,
                           max_objective_diff=max(abs(a - b) for a, b in zip(obj, fast.objective)))
                assert same >= min(5, c), f"{name} alpha={alpha}: orders differ at pick {same}"
            rows.append(row)
            if args.device == "cuda" and torch.cuda.is_available():
                dg, kg = d2.cuda(), ky.cuda()
                greedy_cmi(dg, sigma, kg, cfg, name=name)  # warm-up: CUDA context, kernels
                torch.cuda.synchronize()
                gpu, t_gpu = timed(lambda: (greedy_cmi(dg, sigma, kg, cfg, name=name), torch.cuda.synchronize())[0])
                gpu_rows.append({"layer": name, "channels": c, "alpha": alpha, "gpu_s": t_gpu, "cpu_s": t_fast,
                                 "same_order": gpu.order == fast.order})
    return rows, gpu_rows


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")) or cpu
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reference-layers", type=int, default=3, help="layers for the naive-vs-greedy comparison (1-3)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--with-slow", action="store_true", help="also cmi alpha=1.01 with permutation cutoff, and "
                   "the naive alpha=1.01 ranking on the 32- and 64-channel layers")
    p.add_argument("--skip-criteria", action="store_true", help="only the naive-vs-greedy comparison")
    p.add_argument("--json", help="write all numbers and the machine info here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)

    loaded = load_model(MODEL, "resnet56")
    model, info = loaded.module.eval(), loaded.arch_info
    x, y = load_data(args.samples, info)
    pruner = ChannelPruner(model, x[:1].clone(), 1, 1)
    mach = machine()
    print(f"resnet56, {len(x)} CIFAR-10 train samples, {len(pruner.prunable_groups)} prunable groups; "
          f"{mach['cpu']}, {mach['torch_threads']} threads, torch {mach['torch']}")

    crit_rows = []
    if not args.skip_criteria:
        print(f"\n{'criterion':<22} {'options':<34} {'seconds':>9} {'layers scored':>14}")
        for name, opts in configs(args.with_slow):
            secs, scored = time_criterion(pruner, model, name, opts, x, y)
            text = ",".join(f"{k}={v}" for k, v in opts.items()) or "(defaults)"
            print(f"{name:<22} {text:<34} {secs:9.2f} {scored:>14}", flush=True)
            crit_rows.append({"criterion": name, "options": opts, "seconds": secs, "layers_scored": scored})

    print("\ngreedy CMI ranking, one layer: naive (rebuild every Gram per candidate) vs greedy_cmi")
    print(f"{'layer':<18} {'C':>3} {'alpha':>5} {'naive s':>9} {'greedy s':>9} {'speed-up':>9} "
          f"{'same order':>10} {'common prefix':>13} {'max |obj diff|':>14}")
    rows, gpu_rows = compare(model, pruner, x, y, args)
    for r in rows:
        if r["naive_s"] is None:
            print(f"{r['layer']:<18} {r['channels']:>3} {r['alpha']:>5} {'skipped':>9} {r['greedy_s']:9.3f}")
            continue
        print(f"{r['layer']:<18} {r['channels']:>3} {r['alpha']:>5} {r['naive_s']:9.2f} {r['greedy_s']:9.3f} "
              f"{r['speedup']:8.0f}x {str(r['identical']):>10} {r['common_prefix']:>13} {r['max_objective_diff']:14.2e}")
    for r in rows:
        if r["naive_s"] is not None:
            print(f"  {r['layer']} alpha={r['alpha']}\n    naive : {r['naive_order']}\n    greedy: {r['greedy_order']}")

    if gpu_rows:
        print(f"\nGPU ({mach['gpu']}): greedy_cmi")
        for r in gpu_rows:
            print(f"{r['layer']:<18} {r['channels']:>3} alpha={r['alpha']:<5} GPU {r['gpu_s']:.3f} s, "
                  f"CPU {r['cpu_s']:.3f} s, same order as CPU: {r['same_order']}")
    else:
        print("\nGPU: not available on this machine" if args.device == "cuda" or not torch.cuda.is_available()
              else "\nGPU: not requested (--device cuda)")

    if args.json:
        result = {"command": " ".join(sys.argv), "samples": len(x), "seed": SEED, "machine": mach,
                  "criteria": crit_rows, "reference": rows, "gpu": gpu_rows}
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
