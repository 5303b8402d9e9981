"""The built-in example: no downloads, nothing from outside the package.

It draws an 8-class image dataset procedurally (stripes in three orientations, checkerboards, discs,
rings, crosses, colour gradients; random colours, frequencies, positions and noise), trains the small
`example-cnn` on it for a few seconds, saves `model.pt` (a state dict) and `calib.npz` (held-out images
with labels), then compresses the model for `host` (measured here) and `jetson-nano` (predicted).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CLASSES = ("h-stripes", "v-stripes", "d-stripes", "checker", "disc", "ring", "cross", "gradient")
MEAN, STD = 0.5, 0.25  # matches the `example-cnn` registry entry
WIDTH = 16


def make_dataset(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 images (n, size, size, 3) and labels, balanced over the 8 classes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    images = np.empty((n, size, size, 3), np.uint8)
    for i, c in enumerate(labels):
        freq = rng.uniform(3, 7)
        phase = rng.uniform(0, 2 * np.pi)
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
        dist = np.hypot(xx - cx, yy - cy)
        if c == 0:
            m = np.sin(2 * np.pi * freq * yy + phase) > 0
        elif c == 1:
            m = np.sin(2 * np.pi * freq * xx + phase) > 0
        elif c == 2:
            m = np.sin(2 * np.pi * freq * (xx + yy) / 1.4 + phase) > 0
        elif c == 3:
            m = (np.sin(2 * np.pi * freq * xx + phase) > 0) ^ (np.sin(2 * np.pi * freq * yy + phase) > 0)
        elif c == 4:
            m = dist < r
        elif c == 5:
            m = np.abs(dist - r) < 0.05
        elif c == 6:
            w = rng.uniform(0.05, 0.1)
            m = (np.abs(xx - cx) < w) | (np.abs(yy - cy) < w)
        else:
            angle = rng.uniform(0, 2 * np.pi)
            m = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5) + 0.5)
        fg, bg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        while np.abs(fg - bg).sum() < 0.6:
            fg = rng.uniform(0, 1, 3)
        m = m.astype(np.float32)[..., None]
        img = m * fg + (1 - m) * bg + rng.normal(0, 0.08, (size, size, 3))
        images[i] = np.clip(img * 255, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - MEAN) / STD


def train(seed: int = 0, n_train: int = 3000, epochs: int = 4, width: int = WIDTH, log=print):
    from .archs import get_arch

    torch.manual_seed(seed)
    x_train, y_train = make_dataset(n_train, seed)
    xt, yt = to_tensor(x_train), torch.from_numpy(y_train)
    model = get_arch("example-cnn").factory(num_classes=len(CLASSES), width=width)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * ((len(xt) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=g)
        total = 0.0
        for i in range(0, len(xt), 64):
            idx = order[i:i + 64]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        log(f"[example] epoch {epoch + 1}/{epochs}: loss {total / len(xt):.3f}")
    return model.eval()


def accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    with torch.no_grad():
        pred = model(to_tensor(images)).argmax(1).numpy()
    return float((pred == labels).mean())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compress example", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="example-run", help="working folder (default ./example-run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    p.add_argument("-v", "--verbose", action="store_true", help="full tracebacks")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    return p


def run(args: argparse.Namespace) -> int:
    log = (lambda *a: print(*a, file=sys.stderr))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    model = train(args.seed, log=log)
    x_test, y_test = make_dataset(1000, args.seed + 1)
    acc = accuracy(model, x_test, y_test)
    log(f"[example] trained example-cnn in {time.perf_counter() - t:.1f} s; held-out accuracy {acc:.1%}")
    torch.save(model.state_dict(), out / "model.pt")
    np.savez(out / "calib.npz", x=x_test[:256], y=y_test[:256])

    from .pipeline import compress

    # MACs budgets: a verdict that timing noise cannot flip on a model this small (0.1 ms); the latency
    # reached is still measured on host and predicted for the Nano, and printed.
    runs = {"host": {"macs": "60%"}, "jetson-nano": {"macs": "50%"}}
    summary = {"trained_accuracy": acc, "runs": {}}
    code = 0
    for target, budget in runs.items():
        log(f"[example] compress --target {target} --arch example-cnn --arch-kwargs '{{\"width\": {WIDTH}}}' --calib calib.npz "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in budget.items()) + " model.pt")
        result = compress(out / "model.pt", target=target, arch="example-cnn", arch_kwargs={"width": WIDTH},
                          calib=str(out / "calib.npz"),
                          out=out / f"compressed-{target}", seed=args.seed, progress=not args.json, **budget)
        summary["runs"][target] = result.to_dict()
        summary["runs"][target]["accuracy"] = result.report["accuracy"]
        o, f = result.original, result.final
        log(f"[example] {target}: {result.verdict.upper()} latency {o.latency_ms:.3f} -> {f.latency_ms:.3f} ms "
            f"({f.latency_kind.split(':')[0]}), params {o.params} -> {f.params}, "
            f"calibration top-1 {result.report['accuracy'].get('top1_original', 0):.1%} -> "
            f"{result.report['accuracy'].get('top1_final', 0):.1%}; output {result.out_dir}")
        code = max(code, result.exit_code)
    if args.json:
        print(json.dumps(summary, indent=2))
    return code
