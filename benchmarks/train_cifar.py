"""Train a model-zoo CIFAR architecture on the shared CIFAR-10 JPEGs, for the side-by-side with peers.

    python benchmarks/train_cifar.py --arch vgg16_bn --arch-kwargs '{"width_mult": 0.25}' \
        --epochs 30 --out benchmarks/weights/vgg16_bn-w0.25.pt

Standard recipe of the CIFAR pruning literature, shortened for a 2-core CPU: SGD (momentum 0.9, Nesterov,
weight decay 5e-4), one-cycle cosine learning rate from 0.1, batch 128, random crop with 4-pixel zero
padding and horizontal flips, inputs normalised with the architecture's registered mean/std (what
`compress` applies to uint8 images). The test split is never seen in training; top-1 on the whole test
split (10 000 images) is printed at the end and stored next to the weights (`<out>.json`). Weights are
stored in float16 to keep the file small; the stated accuracy is measured after that rounding.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar_calib import load_split  # noqa: E402

from edge_compress.compress.archs import get_arch  # noqa: E402


def normalise(x_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    x = x_uint8.permute(0, 3, 1, 2).float().div_(255)
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 32x32 crops of the 4-pixel zero-padded batch and random horizontal flips (NCHW, normalised)."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), generator=gen)
    dy = torch.randint(0, 9, (n,), generator=gen)
    rows = (dy.view(n, 1) + torch.arange(32)).view(n, 1, 32, 1).expand(n, x.shape[1], 32, 40)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(32)).view(n, 1, 1, 32).expand(n, x.shape[1], 32, 32)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out


@torch.no_grad()
def top1(model, x, y, mean, std, batch=500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((model(normalise(x[i:i + batch], mean, std)).argmax(1) == y[i:i + batch]).sum())
    return correct / len(x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True)
    p.add_argument("--arch-kwargs", default="{}")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--train-samples", type=int, default=50000)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    info = get_arch(args.arch)
    kwargs = json.loads(args.arch_kwargs)
    model = info.factory(**kwargs)
    xtr, ytr = (torch.from_numpy(a) for a in load_split("train", args.train_samples, args.seed))
    xte, yte = (torch.from_numpy(a) for a in load_split("test", 10000, 0))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = math.ceil(len(xtr) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
                                                pct_start=0.15, anneal_strategy="cos")
    gen = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(xtr), generator=gen)
        total = 0.0
        for i in range(0, len(xtr), args.batch):
            idx = order[i:i + args.batch]
            x = augment(normalise(xtr[idx], info.mean, info.std), gen)
            loss = F.cross_entropy(model(x), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {total / len(xtr):.3f}, {time.time() - start:.0f} s", flush=True)
    model.half().float()   # the accuracy stated is that of the stored float16 weights
    acc = top1(model, xte, yte, info.mean, info.std)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, out)
    meta = {"arch": args.arch, "arch_kwargs": kwargs, "epochs": args.epochs, "train_samples": len(xtr),
            "lr": args.lr, "batch": args.batch, "seed": args.seed, "top1_test_10000": acc,
            "train_seconds": round(time.time() - start), "command": " ".join(sys.argv)}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"top-1 on the 10000 test images: {acc:.4f}; wrote {out}")


if __name__ == "__main__":
    main()
