"""Every criterion through the same selection and the same recovery, on the same model and budget.

    python benchmarks/criteria.py [--arch resnet56] [--budget latency_ms=50%] [--criteria l1,cmi,...] \
        [--seed 0] [--json benchmarks/results/criteria-resnet56-lat50.json]

Per criterion: the pipeline on `host` (knapsack selection, BatchNorm re-estimated every round, measured
ONNX Runtime latency), top-1 on a seeded subset of the CIFAR-10 test split right after pruning, and after
one epoch of distillation from the original over `--train-samples` training images (the same for
every arm). Results are written after every arm, so an interrupted run keeps what it measured.
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.budget_search import _top1, datasets, parse_criterion_config  # noqa: E402
from edge_compress.compress import compress, load_pruned  # noqa: E402
from edge_compress.compress.errors import BudgetError  # noqa: E402
from edge_compress.compress.model_io import load_model  # noqa: E402
from edge_compress.compress.config import RecoveryOptions  # noqa: E402
from edge_compress.compress.recovery import recover  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
MODELS = {"resnet56": SHARED / "models" / "resnet56-4bfd9763.th", "resnet20": SHARED / "models" / "resnet20-12fca82f.th"}
ALL = ["l1", "l2", "bn-scale", "taylor", "lamp", "fpgm", "random", "cmi", "mi-gradient", "mipp",
       "capacity-independence"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet56", choices=sorted(MODELS))
    p.add_argument("--budget", default="latency_ms=50%", help="KEY=VALUE, e.g. latency_ms=50%% or macs=50%%")
    p.add_argument("--criteria", default=",".join(ALL),
                   help="comma-separated criteria, each optionally name:KEY=VALUE+KEY=VALUE (e.g. cmi:weight=none)")
    p.add_argument("--selection", default="knapsack")
    p.add_argument("--calib-samples", type=int, default=256)
    p.add_argument("--train-samples", type=int, default=5000)
    p.add_argument("--test-samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    key, _, value = args.budget.partition("=")
    result = {"command": " ".join(sys.argv), "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                          "torch": torch.__version__},
              "arch": args.arch, "budget": {key: value}, "selection": args.selection, "seed": args.seed,
              "test_samples": args.test_samples, "train_samples": args.train_samples, "rows": []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        calib, train, test = datasets(tmp, args.arch, args.calib_samples, args.train_samples, args.test_samples,
                                      args.seed)
        original = load_model(MODELS[args.arch], args.arch, {}, False).module.eval()
        result["original_top1"] = _top1(original, test)
        for crit in args.criteria.split(","):
            started = time.perf_counter()
            row = {"criterion": crit}
            try:
                name, opts = parse_criterion_config(crit, "+")   # e.g. cmi:weight=none
                r = compress(str(MODELS[args.arch]), target="host", arch=args.arch, calib=str(calib), criterion=name,
                             criterion_option=opts, selection=args.selection, out=str(tmp / f"arm{len(result['rows'])}"),
                             progress=False, seed=args.seed, **{key: value})
            except BudgetError as e:
                row.update(verdict="unreachable", message=str(e))
            else:
                model = load_pruned(r.out_dir / "model.pruned.pt")
                row.update(verdict=r.verdict, latency_ms=r.final.latency_ms, original_latency_ms=r.original.latency_ms,
                           macs=r.final.macs, params=r.final.params, top1_pruned=_top1(model, test),
                           blocks_removed=r.report["pruning"].get("blocks_removed", []),
                           score_seconds=r.report["timings_s"].get("score"))
                recover(model, copy.deepcopy(original), (train.x, None), RecoveryOptions(epochs=1, seed=args.seed),
                        progress=False)
                row["top1_distilled"] = _top1(model, test)
            row["seconds"] = round(time.perf_counter() - started, 1)
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
