"""The built-in example: no downloads, nothing from outside the package.

It draws an 8-class image dataset procedurally (stripes in three orientations, checkerboards, discs,
rings, crosses, colour gradients; random colours, frequencies, positions and noise), trains the small
`example-cnn` on it, saves `model.pt` (a state dict) and `calib.npz` (256 labelled images), compresses
the model to 1.5x its speed for `host` (measured here, the original and the pruned model timed
interleaved) and for `raspberry-pi-4` (predicted by its fitted cost model), and checks both pruned
models' accuracy on 1000 held-out images that neither training nor calibration saw.
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
# Wide enough that whole 16-channel blocks (ONNX Runtime's NCHWc block on AVX-512) can go from every
# layer, so the measured speed-up is the pruning's and not lost to padding.
WIDTH = 32
EPOCHS = 3
RUNS = {"host": {"speedup": 1.5}, "raspberry-pi-4": {"speedup": 1.5}}


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


def train(seed: int = 0, n_train: int = 3000, epochs: int = EPOCHS, width: int = WIDTH, log=print):
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
    from .report import units
    from .model_io import load_pruned
    from .api import compress
    from .report.summary import summary_line

    quiet = args.quiet or args.json
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    model = train(args.seed, epochs=EPOCHS, width=WIDTH, log=log)
    x_test, y_test = make_dataset(1256, args.seed + 1)
    x_calib, y_calib, x_held, y_held = x_test[:256], y_test[:256], x_test[256:], y_test[256:]
    acc = accuracy(model, x_held, y_held)
    log(f"[example] trained example-cnn (width {WIDTH}) in {time.perf_counter() - t:.0f} s; "
        f"held-out accuracy {acc:.1%} on {len(y_held)} images")
    torch.save(model.state_dict(), out / "model.pt")
    np.savez(out / "calib.npz", x=x_calib, y=y_calib)

    summary = {"trained_accuracy_held_out": acc, "held_out_images": len(y_held), "runs": {}}
    code = 0
    for target, budget in RUNS.items():
        log(f"\n[example] compress --target {target} --arch example-cnn --arch-kwargs '{{\"width\": {WIDTH}}}' "
            "--calib calib.npz " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in budget.items()) + " model.pt")
        result = compress(out / "model.pt", target=target, arch="example-cnn", arch_kwargs={"width": WIDTH},
                          calib=str(out / "calib.npz"), out=out / f"compressed-{target}", seed=args.seed,
                          progress=not quiet, **budget)
        pruned_acc = accuracy(load_pruned(result.out_dir / "model.pruned.pt").eval(), x_held, y_held)
        row = result.to_dict()
        row["held_out_accuracy"] = {"original": acc, "pruned": pruned_acc, "images": len(y_held)}
        summary["runs"][target] = row
        log(summary_line(result.verdict, result.original.to_dict(), result.final.to_dict(),
                         result.budget.to_dict(), result.report))
        log(f"[example] held-out accuracy {acc:.1%} -> {pruned_acc:.1%} ({len(y_held)} images neither training "
            f"nor calibration saw); MACs {units.count(result.original.macs)} -> {units.count(result.final.macs)}; "
            f"report: {result.out_dir / 'report.html'}")
        code = max(code, result.exit_code)
    if args.json:
        print(json.dumps(summary, indent=2))
    return code
