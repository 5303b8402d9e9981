"""Hardware-aware search against uniform pruning on ResNet-56, measured on this machine (target `host`).

    python benchmarks/budget_search.py [--criterion l1] [--train-samples 5000] [--test-samples 2000] \
        [--json benchmarks/results/budget_search.json]

1. Latency budget 50 % of the original (measured, ONNX Runtime CPU, 1 thread, batch 1): our knapsack
   selection priced by the host cost model (closed loop on measurements) against uniform per-layer
   ratios with the same criterion, each stopping at the first round that meets the budget. Accuracy
   on a seeded subset of the CIFAR-10 test split right after pruning (BatchNorm re-estimated) and after
   one epoch of distillation from the original over `--train-samples` training images (the same for
   both arms).
2. MACs budget 50 %: measured speed-up divided by the MACs reduction, knapsack vs uniform.
Pretrained ResNet-56 from ../shared/models; data from ../shared/data/cifar10 (JPEG: see its README).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.cifar_calib import load_split  # noqa: E402
from edge_compress.compress import compress, load_pruned  # noqa: E402
from edge_compress.compress.archs import get_arch  # noqa: E402
from edge_compress.compress.calib import load_calibration  # noqa: E402
from edge_compress.compress.errors import BudgetError  # noqa: E402
from edge_compress.compress.model_io import load_model  # noqa: E402
from edge_compress.compress.config import RecoveryOptions  # noqa: E402
from edge_compress.compress.recovery import recover  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
MODEL = SHARED / "models" / "resnet56-4bfd9763.th"


def _npz(tmp: Path, name: str, split: str, n: int, seed: int) -> Path:
    x, y = load_split(split, n, seed)
    path = tmp / f"{name}.npz"
    np.savez(path, x=x, y=y)
    return path


def datasets(tmp: Path, arch: str, calib_samples: int, train_samples: int, test_samples: int, seed: int):
    """The calibration npz (for the pipeline), and normalised training and test sets: disjoint seeded subsets."""
    info = get_arch(arch)
    calib = _npz(tmp, "calib", "train", calib_samples, seed)
    train = load_calibration(str(_npz(tmp, "train", "train", train_samples, seed + 1)),
                             info.input_shape, train_samples, info.mean, info.std, seed)
    test = load_calibration(str(_npz(tmp, "test", "test", test_samples, seed)),
                            info.input_shape, test_samples, info.mean, info.std, seed)
    return calib, train, test


def parse_criterion_config(text: str, sep: str) -> tuple[str, dict]:
    """`name[:KEY=VALUE<sep>KEY=VALUE]` -> (name, options), as --criterion / --criterion-option take them."""
    name, _, rest = text.partition(":")
    return name.strip(), dict(kv.split("=", 1) for kv in rest.split(sep) if kv)


def _top1(model, data) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(data.x[i:i + 250]).argmax(1) for i in range(0, len(data.x), 250)])
    return float((pred == data.y).float().mean())


def _arm(tmp: Path, calib: Path, selection: str, criterion: str, **budget) -> dict:
    out = tmp / f"{selection}-{'-'.join(f'{k}{v}' for k, v in budget.items())}"
    try:
        r = compress(str(MODEL), target="host", arch="resnet56", calib=str(calib), criterion=criterion,
                     selection=selection, out=str(out), progress=False, **budget)
    except BudgetError as e:
        return {"selection": selection, "budget": budget, "verdict": "unreachable", "message": str(e),
                "best_reachable": e.best}
    rep = r.report
    return {"selection": selection, "budget": budget, "verdict": r.verdict,
            "latency_ms": r.final.latency_ms, "latency_kind": r.final.latency_kind,
            "original_latency_ms": r.original.latency_ms, "macs": r.final.macs, "original_macs": r.original.macs,
            "params": r.final.params, "rounds": len(rep["pruning"]["rounds"]), "out": str(out),
            "blocks_removed": rep["pruning"].get("blocks_removed", []),
            "budget_resolved": rep["budget"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--criterion", default="l1")
    p.add_argument("--calib-samples", type=int, default=256)
    p.add_argument("--train-samples", type=int, default=5000)
    p.add_argument("--test-samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        calib, train, test = datasets(tmp, "resnet56", args.calib_samples, args.train_samples, args.test_samples,
                                      args.seed)
        original = load_model(MODEL, "resnet56", {}, False).module.eval()
        base = _top1(original, test)
        print(f"original ResNet-56: top-1 {base:.4f} on {len(test.x)} test images")
        rows = []
        for budget in ({"latency_ms": "50%"}, {"latency_ms": "60%"}, {"macs": "50%"}):
            for selection in ("knapsack", "uniform"):
                row = _arm(tmp, calib, selection, args.criterion, **budget)
                if row["verdict"] == "unreachable":
                    rows.append(row)
                    print(json.dumps(row))
                    continue
                model = load_pruned(Path(row["out"]) / "model.pruned.pt")
                row["top1_pruned"] = _top1(model, test)
                if "latency_ms" in budget:
                    rec = recover(model, copy.deepcopy(original), (train.x, None),
                                  RecoveryOptions(epochs=1, seed=args.seed), progress=False)
                    row["top1_distilled"] = _top1(model, test)
                    row["distill"] = {"steps": rec.steps, "seconds": rec.seconds, "samples": len(train.x)}
                row["speedup"] = row["original_latency_ms"] / row["latency_ms"]
                row["macs_reduction"] = row["original_macs"] / row["macs"]
                row["speedup_per_macs_reduction"] = row["speedup"] / row["macs_reduction"]
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "out"}))
    result = {"command": " ".join(sys.argv), "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__},
              "original_top1": base, "test_samples": args.test_samples, "train_samples": args.train_samples,
              "criterion": args.criterion, "rows": rows}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
