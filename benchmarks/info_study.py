"""One-shot criterion study: every configuration through the same knapsack selection to the same budget.

    python benchmarks/info_study.py --arch resnet56 --macs 0.5 --seeds 0,1,2 \
        --configs "l1;fpgm;cmi;cmi:labels=onehot" --json benchmarks/results/study-resnet56-macs50.json

A configuration is `criterion[:KEY=VALUE,KEY=VALUE]` (the options of `--criterion-option`, plus
`labels_from=predicted` to score against the original model's predictions instead of the labels, and
`selection=uniform` for the pipeline's uniform selection, where CMI's cutoffs and MIPP's ratios set
each layer's share, in steps of 2 % of the channels). Per seed:
a seeded draw of `--calib-samples` training images (scoring, BatchNorm re-estimation after every round),
the pipeline's knapsack search priced by MACs (predicted, no latency measurement, so arms land at the
same MAC count), BatchNorm re-estimated, top-1 on `--test-samples` test images (the same images for
every seed and arm, so differences between arms are paired). `--recover` adds the benchmark's short
recovery (one epoch of distillation from the original over `--train-samples` training images;
`--recover-lr`, `--recover-epochs`). `--latency-ms X` prices by the host cost model instead and stops
at X ms predicted; `--measured-latency-ms X` measures host latency (ONNX Runtime) after every round and
stops at X ms measured; `--latency-of-l1-at-macs F` runs every arm to the latency of the l1 arm at F
of the MACs and measures every final model (equal latency, as in BENCHMARKS.md).
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
from tqdm.auto import tqdm  # noqa: E402

from benchmarks.budget_search import _top1, parse_criterion_config  # noqa: E402
from benchmarks.cifar_calib import load_split  # noqa: E402
from edge_compress.compress.archs import get_arch  # noqa: E402
from edge_compress.compress.bn_recalibration import recalibrate_batchnorm  # noqa: E402
from edge_compress.compress.calib import load_calibration  # noqa: E402
from edge_compress.compress.costmodel.model import factors_from_profile, layer_costs, predict_latency_ms  # noqa: E402
from edge_compress.compress.criteria.registry import make_criterion  # noqa: E402
from edge_compress.compress.evaluate import LatencyEvaluator  # noqa: E402
from edge_compress.compress.model_io import load_model  # noqa: E402
from edge_compress.compress.pruning.pruner import ChannelPruner  # noqa: E402
from edge_compress.compress.config import RecoveryOptions  # noqa: E402
from edge_compress.compress.recovery import recover  # noqa: E402
from edge_compress.compress.search.budget import Budget  # noqa: E402
from edge_compress.compress.search.rounds import SearchSetup, SearchState, knapsack_search, uniform_search  # noqa: E402
from edge_compress.device_profiles import load_profile  # noqa: E402
import benchmarks.study_plugins  # noqa: E402,F401 - registers the study's criteria (fisher, combo, ..., <criterion>-study)

SHARED = Path(__file__).resolve().parents[2] / "shared"
MODELS = {"resnet56": SHARED / "models" / "resnet56-4bfd9763.th", "resnet20": SHARED / "models" / "resnet20-12fca82f.th"}
CACHE = Path("/tmp/info-study-cache")
HOST_FACTORS = factors_from_profile(load_profile("host"))


def _tensors(arch: str, split: str, n: int, seed: int):
    """A seeded subset of a CIFAR-10 split, normalised for `arch` (decoded once, cached as .npz)."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"{split}-{n}-{seed}.npz"
    if not path.exists():
        x, y = load_split(split, n, seed)
        np.savez(path, x=x, y=y)
    info = get_arch(arch)
    return load_calibration(str(path), info.input_shape, n, info.mean, info.std, seed)


def prune_one(config, calib, budget: Budget, original, measured: bool = False, measure_final: bool = False):
    """Prune a copy of `original` to `budget` with `config`; options may include labels_from=predicted.

    measured: the loop measures host latency (ONNX Runtime) after every round, as the pipeline does on
    `host`, so a latency budget is met as measured. measure_final: the returned evaluation's latency is
    measured with the profile's full run count after the final BatchNorm re-estimation.
    """
    name, opts = parse_criterion_config(config, ",")
    labels_from = opts.pop("labels_from", "data")
    selection = opts.pop("selection", "knapsack")   # uniform: per-group keep fractions (the criterion's own cutoffs)
    crit = make_criterion(name, opts)
    model = copy.deepcopy(original)
    profile = load_profile("host")
    cx, cy = calib
    if labels_from == "predicted":
        with torch.no_grad():
            cy = original(cx).argmax(1)
    elif labels_from != "data":
        raise SystemExit(f"labels_from={labels_from!r}: choose data or predicted")
    example = cx[:1].clone()
    pruner = ChannelPruner(model, example, profile.pruning.channel_multiple, profile.pruning.min_channels)
    evaluator = LatencyEvaluator(profile, example)
    evaluator.measured = measured   # False: MACs counted, latency predicted, no measurement noise in the loop
    timing = {"score": 0.0}

    def prepare(view):
        t = time.perf_counter()
        crit.prepare(view, cx, cy)
        timing["score"] += time.perf_counter() - t

    setup = SearchSetup(crit, evaluator, 1.0, prepare, lambda current: recalibrate_batchnorm(current, cx),
                        tqdm(disable=True), [], samples=cx)   # samples: the streams valued as the product does
    try:
        start = SearchState(pruner, budget, evaluator.evaluate(model))
        if selection == "knapsack":
            final = knapsack_search(setup, start)
        elif selection == "uniform":
            final = uniform_search(setup, start, 0.02)
        else:
            raise SystemExit(f"selection={selection!r}: choose knapsack or uniform")
        ev = final.evaluation
        recalibrate_batchnorm(model, cx)
        if measure_final:
            evaluator.measured = True
            ev = evaluator.evaluate(model, full=True)
    finally:
        evaluator.close()
    return model, ev, (setup.rounds, final.pruner), timing["score"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet56", choices=sorted(MODELS))
    p.add_argument("--macs", type=float, help="keep this fraction of the original MACs")
    p.add_argument("--latency-ms", type=float, help="predicted host latency budget in ms (equal-latency arms)")
    p.add_argument("--measured-latency-ms", type=float,
                   help="measured host latency budget in ms: the loop measures after every round (equal measured latency)")
    p.add_argument("--latency-of-l1-at-macs", type=float, metavar="F",
                   help="equal latency: per seed, the l1 arm is pruned to F of the original MACs and its host latency "
                        "predicted and measured; every arm runs to that predicted latency (host cost model, fitted "
                        "on this machine) and every arm's final latency is measured")
    p.add_argument("--configs", required=True, help="';'-separated criterion[:KEY=VALUE,...] configurations")
    p.add_argument("--seeds", default="0")
    p.add_argument("--calib-samples", type=int, default=256)
    p.add_argument("--test-samples", type=int, default=5000)
    p.add_argument("--train-samples", type=int, default=5000)
    p.add_argument("--recover", action="store_true")
    p.add_argument("--recover-only", help="';'-separated configurations that get the recovery (default: all)")
    p.add_argument("--recover-lr", type=float, default=RecoveryOptions().lr, help="learning rate of the recovery")
    p.add_argument("--recover-epochs", type=float, default=RecoveryOptions().epochs)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    test = _tensors(args.arch, "test", args.test_samples, 12345)
    original = load_model(MODELS[args.arch], args.arch, {}, False).module.eval()
    base = _top1(original, test)
    macs0 = sum(c.macs for c in layer_costs(original, test.x[:1]))
    if sum(v is not None for v in (args.latency_ms, args.measured_latency_ms, args.latency_of_l1_at_macs)) > 1:
        raise SystemExit("give one of --latency-ms (predicted), --measured-latency-ms, --latency-of-l1-at-macs")
    budget = Budget(latency_ms=args.latency_ms or args.measured_latency_ms, macs=args.macs * macs0 if args.macs else None)
    measured = args.measured_latency_ms is not None
    result = {"command": " ".join(sys.argv), "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads},
              "arch": args.arch, "original_top1": base, "original_macs": macs0, "budget": budget.to_dict(),
              "test_samples": len(test.y), "calib_samples": args.calib_samples,
              "recovery": {"epochs": args.recover_epochs, "lr": args.recover_lr, "train_samples": args.train_samples}
              if args.recover else None, "rows": []}
    references: dict[int, float] = {}
    if args.latency_of_l1_at_macs:
        for seed in [int(s) for s in args.seeds.split(",")]:
            torch.manual_seed(seed)
            data = _tensors(args.arch, "train", args.calib_samples, 1000 + seed)
            model, ev, _, _ = prune_one("l1", (data.x, data.y), Budget(macs=args.latency_of_l1_at_macs * macs0),
                                        original, False, True)
            references[seed] = predict_latency_ms(ev.layers, HOST_FACTORS)
            result.setdefault("reference", {})[seed] = {"predicted_ms": references[seed], "measured_ms": ev.metrics.latency_ms,
                                                        "macs": ev.metrics.macs}
            print(f"seed {seed}: l1 at {args.latency_of_l1_at_macs:.0%} MACs: {ev.metrics.macs / 1e6:.1f} M MACs, "
                  f"{references[seed]:.3f} ms predicted, {ev.metrics.latency_ms:.3f} ms measured", flush=True)
        result["budget"] = {"latency_ms": statistics.mean(references.values())}
        result["reference_macs_fraction"] = args.latency_of_l1_at_macs
        result["budget_rule"] = (f"per seed, the host latency of l1 pruned to {args.latency_of_l1_at_macs:.0%} of the MACs "
                                 "(arms run to it on the fitted cost model; final latencies measured)")
    print(f"{args.arch}: base top-1 {base:.4f} on {len(test.y)} test images, {macs0 / 1e6:.1f} M MACs", flush=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    for config in [c.strip() for c in args.configs.split(";") if c.strip()]:
        accs, recs = [], []
        for seed in seeds:
            torch.manual_seed(seed)
            data = _tensors(args.arch, "train", args.calib_samples, 1000 + seed)
            t = time.perf_counter()
            if seed in references:
                budget = Budget(latency_ms=references[seed])
            model, ev, (rounds, pruner), score_s = prune_one(config, (data.x, data.y), budget, original, measured,
                                                measured or bool(references))
            row = {"config": config, "seed": seed, "top1": _top1(model, test), "macs": ev.metrics.macs,
                   "latency_ms": ev.metrics.latency_ms, "latency_kind": ev.metrics.latency_kind,
                   "predicted_ms": predict_latency_ms(ev.layers, HOST_FACTORS),
                   "params": ev.metrics.params,
                   "rounds": len(rounds), "blocks_removed": list(getattr(pruner, "removed_blocks", [])),
                   "channels": {g.root: g.channels for g in pruner.groups.values() if g.prunable},
                   "score_s": round(score_s, 2), "prune_s": round(time.perf_counter() - t, 1)}
            accs.append(row["top1"])
            if args.recover and (not args.recover_only or config in args.recover_only.split(";")):
                tr = _tensors(args.arch, "train", args.train_samples, 2000 + seed)
                recover(model, copy.deepcopy(original), (tr.x, None), RecoveryOptions(epochs=args.recover_epochs, lr=args.recover_lr, seed=seed),
                        progress=False)
                row["top1_recovered"] = _top1(model, test)
                recs.append(row["top1_recovered"])
            result["rows"].append(row)
            if args.json:
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        spread = statistics.pstdev(accs) if len(accs) > 1 else 0.0
        msg = f"{config:60s} one-shot {100 * statistics.mean(accs):.2f} ± {100 * spread:.2f}"
        if recs:
            msg += f"  recovered {100 * statistics.mean(recs):.2f} ± {100 * (statistics.pstdev(recs) if len(recs) > 1 else 0):.2f}"
        print(msg + f"  ({row['macs'] / 1e6:.1f} M MACs, {row['latency_ms']:.3f} ms {'measured' if ev.stats else 'pred'}, {row['score_s']} s score)",
              flush=True)


if __name__ == "__main__":
    main()
