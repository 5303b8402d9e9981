"""One-shot criterion study: every configuration through the same knapsack selection to the same budget.

    python benchmarks/info_study.py --arch resnet56 --macs 0.5 --seeds 0,1,2 \
        --configs "l1;fpgm;cmi;cmi:labels=onehot" --json benchmarks/results/study-resnet56-macs50.json

A configuration is `criterion[:KEY=VALUE,KEY=VALUE]` (the options of `--criterion-option`). Per seed:
a seeded draw of `--calib-samples` training images (scoring, BatchNorm re-estimation after every round),
the pipeline's knapsack search priced by MACs (predicted, no latency measurement, so arms land at the
same MAC count), BatchNorm re-estimated, top-1 on `--test-samples` test images (the same images for
every seed and arm, so differences between arms are paired). `--recover` adds the benchmark's short
recovery (one epoch of distillation from the original over `--train-samples` training images).
`--latency-ms X` prices by the host cost model instead and stops at X ms predicted (equal-latency arms).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.cifar_calib import load_split  # noqa: E402
from compress.archs import get_arch  # noqa: E402
from compress.bn_recalibration import recalibrate_batchnorm  # noqa: E402
from compress.budget import Budget, Metrics  # noqa: E402
from compress.cost_model import factors_from_profile, layer_costs, predict_latency_ms  # noqa: E402
from compress.criteria import make_criterion  # noqa: E402
from compress.evaluate import Evaluation  # noqa: E402
from compress.model_io import load_model  # noqa: E402
from compress.pruning import ChannelPruner  # noqa: E402
from compress.recovery import RecoveryOptions, recover  # noqa: E402
from compress.search import SearchContext, knapsack_search  # noqa: E402
from device_profiles import load_profile  # noqa: E402
import benchmarks.study_plugins  # noqa: E402,F401 - registers the experimental fisher and combo criteria

SHARED = Path(__file__).resolve().parents[2] / "shared"
MODELS = {"resnet56": SHARED / "models" / "resnet56-4bfd9763.th", "resnet20": SHARED / "models" / "resnet20-12fca82f.th"}
CACHE = Path("/tmp/info-study-cache")


class PredictedEvaluator:
    """MACs counted and latency predicted by the host cost model: no measurement noise inside the loop."""

    measured = False

    def __init__(self, profile, example):
        self.factors, self.example = factors_from_profile(profile), example

    def evaluate(self, model, full=False, onnx_path=None) -> Evaluation:
        costs = layer_costs(model, self.example)
        params = sum(p.numel() for p in model.parameters())
        lat = predict_latency_ms(costs, self.factors)
        return Evaluation(Metrics(float(lat), "predicted", 0.0, sum(c.macs for c in costs), int(params)), None, costs)


class _Bar:
    def update(self, n=1):
        pass

    def set_postfix_str(self, s):
        pass


def _tensors(arch: str, split: str, n: int, seed: int):
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"{split}-{n}-{seed}.npz"
    if not path.exists():
        x, y = load_split(split, n, seed)
        np.savez(path, x=x, y=y)
    d = np.load(path)
    info = get_arch(arch)
    x = torch.from_numpy(d["x"]).float().div(255).permute(0, 3, 1, 2)
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(), torch.from_numpy(d["y"]).long()


def top1(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])
    return float((pred == y).float().mean())


def parse_config(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    opts = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    return name.strip(), opts


def prune_one(arch, config, calib, budget: Budget, original, labels: str = "true"):
    name, opts = parse_config(config)
    crit = make_criterion(name, opts)
    model = copy.deepcopy(original)
    profile = load_profile("host")
    cx, cy = calib
    if labels == "predicted":
        with torch.no_grad():
            cy = original(cx).argmax(1)
    example = cx[:1].clone()
    pruner = ChannelPruner(model, example, crit, profile.pruning.channel_multiple, profile.pruning.min_channels)
    ev0 = PredictedEvaluator(profile, example)
    start = ev0.evaluate(model)
    timing = {"score": 0.0}

    def prepare():
        t = time.perf_counter()
        ctx.pruner.prepare_criterion(cx, cy)
        timing["score"] += time.perf_counter() - t

    ctx = SearchContext(pruner, ev0, budget, 1.0, prepare, lambda: recalibrate_batchnorm(model, cx), _Bar(), [])
    ev = knapsack_search(ctx, start)
    recalibrate_batchnorm(model, cx)
    return model, ev, ctx, timing["score"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet56", choices=sorted(MODELS))
    p.add_argument("--macs", type=float, help="keep this fraction of the original MACs")
    p.add_argument("--latency-ms", type=float, help="predicted host latency budget in ms (equal-latency arms)")
    p.add_argument("--configs", required=True, help="';'-separated criterion[:KEY=VALUE,...] configurations")
    p.add_argument("--seeds", default="0")
    p.add_argument("--calib-samples", type=int, default=256)
    p.add_argument("--test-samples", type=int, default=5000)
    p.add_argument("--train-samples", type=int, default=5000)
    p.add_argument("--recover", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tx, ty = _tensors(args.arch, "test", args.test_samples, 12345)
    original = load_model(MODELS[args.arch], args.arch, {}, False).module.eval()
    base = top1(original, tx, ty)
    macs0 = sum(c.macs for c in layer_costs(original, tx[:1]))
    budget = Budget(latency_ms=args.latency_ms, macs=args.macs * macs0 if args.macs else None)
    result = {"command": " ".join(sys.argv), "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads},
              "arch": args.arch, "original_top1": base, "original_macs": macs0, "budget": budget.to_dict(),
              "test_samples": len(ty), "calib_samples": args.calib_samples, "rows": []}
    print(f"{args.arch}: base top-1 {base:.4f} on {len(ty)} test images, {macs0 / 1e6:.1f} M MACs", flush=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    for config in [c.strip() for c in args.configs.split(";") if c.strip()]:
        accs, recs = [], []
        for seed in seeds:
            torch.manual_seed(seed)
            calib = _tensors(args.arch, "train", args.calib_samples, 1000 + seed)
            labels = "true"
            cfg = config
            if "labels_from=predicted" in cfg:
                labels, cfg = "predicted", cfg.replace("labels_from=predicted", "").replace(",,", ",").rstrip(",:")
            t = time.perf_counter()
            model, ev, ctx, score_s = prune_one(args.arch, cfg, calib, budget, original, labels)
            row = {"config": config, "seed": seed, "top1": top1(model, tx, ty), "macs": ev.metrics.macs,
                   "predicted_ms": ev.metrics.latency_ms, "params": ev.metrics.params,
                   "rounds": len(ctx.rounds), "blocks_removed": list(getattr(ctx.pruner, "removed_blocks", [])),
                   "channels": {g.root: g.channels for g in ctx.pruner.groups.values() if g.prunable},
                   "score_s": round(score_s, 2), "prune_s": round(time.perf_counter() - t, 1)}
            accs.append(row["top1"])
            if args.recover:
                tr = _tensors(args.arch, "train", args.train_samples, 2000 + seed)
                recover(model, copy.deepcopy(original), (tr[0], None), RecoveryOptions(epochs=1, seed=seed),
                        progress=False)
                row["top1_recovered"] = top1(model, tx, ty)
                recs.append(row["top1_recovered"])
            result["rows"].append(row)
            if args.json:
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        spread = statistics.pstdev(accs) if len(accs) > 1 else 0.0
        msg = f"{config:60s} one-shot {100 * statistics.mean(accs):.2f} ± {100 * spread:.2f}"
        if recs:
            msg += f"  recovered {100 * statistics.mean(recs):.2f} ± {100 * (statistics.pstdev(recs) if len(recs) > 1 else 0):.2f}"
        print(msg + f"  ({row['macs'] / 1e6:.1f} M MACs, {row['predicted_ms']:.3f} ms pred, {row['score_s']} s score)",
              flush=True)


if __name__ == "__main__":
    main()
