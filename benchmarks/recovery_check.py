"""Recovery check: how much of the accuracy lost to pruning one short recovery run wins back, and what it costs.

Prunes a pretrained CIFAR ResNet of ../shared/models with uniform L1 to a fraction of its prunable
channels, re-estimates BatchNorm, then trains copies with `compress.recovery.recover` (distillation
from the original without labels, fine-tuning with them) on CIFAR-10 training images, and reports
top-1 on test images at each stage with the seconds per step.

    python benchmarks/recovery_check.py --arch resnet20 --keep 0.5 --train-samples 5000 --epochs 1 \
        --lr 0.01 0.05 --out benchmarks/results/recovery_check.json
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cifar_calib import load_split  # noqa: E402

from edge_compress.compress.bn_recalibration import recalibrate_batchnorm  # noqa: E402
from edge_compress.compress.calib import CalibData  # noqa: E402
from edge_compress.compress.criteria.registry import make_criterion  # noqa: E402
from edge_compress.compress.model_io import load_model  # noqa: E402
from edge_compress.compress.pruning.pruner import ChannelPruner  # noqa: E402
from edge_compress.compress.search.removal import prune_to  # noqa: E402
from edge_compress.compress.config import RecoveryOptions  # noqa: E402
from edge_compress.compress.recovery import load_training_data, recover  # noqa: E402

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
FILES = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}


def split_data(split: str, samples: int, seed: int, info) -> CalibData:
    """A seeded subset of a CIFAR-10 split, normalised through the same loader as --train-data."""
    x, y = load_split(split, samples, seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{split}.npz"
        np.savez(path, x=x, y=y)
        return load_training_data(path, info.input_shape, info.mean, info.std)


def top1(model, data: CalibData) -> float:
    with torch.no_grad():
        preds = torch.cat([model.eval()(data.x[i:i + 256]).argmax(1) for i in range(0, len(data), 256)])
    return float((preds == data.y).float().mean())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=sorted(FILES), default="resnet20")
    p.add_argument("--keep", type=float, default=0.5, help="fraction of each prunable group's channels kept")
    p.add_argument("--train-samples", type=int, default=5000)
    p.add_argument("--test-samples", type=int, default=1000)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, nargs="+", default=[0.01])
    p.add_argument("--modes", nargs="+", default=["distill", "finetune"], choices=("distill", "finetune"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = load_model(MODELS / FILES[args.arch], arch=args.arch)
    original, info = loaded.module, loaded.arch_info
    train = split_data("train", args.train_samples, 1, info)
    test = split_data("test", args.test_samples, 0, info)
    pruned = copy.deepcopy(original)
    prune_to(ChannelPruner(pruned, train.x[:2]), make_criterion("l1"), args.keep)
    recalibrate_batchnorm(pruned, train.x[:256])
    rows = {"original": top1(original, test), "pruned_bn_recalibrated": top1(pruned, test)}
    runs = []
    for mode in args.modes:
        for lr in args.lr:
            student = copy.deepcopy(pruned)
            data = train if mode == "finetune" else CalibData(train.x, None, train.source, "none")
            t = time.perf_counter()
            result = recover(student, original, data, RecoveryOptions(epochs=args.epochs, lr=lr, mode=mode))
            seconds = time.perf_counter() - t
            runs.append({"mode": mode, "lr": lr, "top1": top1(student, test), "steps": result.steps,
                         "seconds": round(seconds, 1), "seconds_per_step": round(seconds / result.steps, 3),
                         "epoch_losses": result.epoch_losses})
            print(f"{mode:8s} lr {lr:<6g} top-1 {runs[-1]['top1']:.2%}  {result.steps} steps, "
                  f"{runs[-1]['seconds_per_step']:.3f} s/step", flush=True)
    params = sum(p.numel() for p in pruned.parameters()) / sum(p.numel() for p in original.parameters())
    summary = {"arch": args.arch, "keep": args.keep, "params_kept": round(params, 3), "train_samples": len(train),
               "test_samples": len(test), "epochs": args.epochs, "threads": torch.get_num_threads(),
               "top1": rows, "recovery": runs}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
