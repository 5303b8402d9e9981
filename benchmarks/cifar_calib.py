"""Write a CIFAR-10 calibration/evaluation .npz from ../shared/data/cifar10 (decoded JPEGs, NHWC uint8).

    python benchmarks/cifar_calib.py --split test --samples 1000 --seed 0 --out cifar-test-1000.npz

The pipeline normalises NHWC uint8 images with the architecture's mean/std (for the CIFAR ResNets the
normalisation they were trained with). Samples are a seeded random subset: the split is stored class
by class, so the first N images would all be one class.
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "cifar10-jpeg.npz"


def load_split(split: str, samples: int, seed: int, path: Path = SHARED) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(path)
    jpeg, offsets, labels = data[f"{split}_jpeg"], data[f"{split}_offsets"], data[f"{split}_labels"]
    n = len(labels)
    idx = np.sort(np.random.default_rng(seed).choice(n, min(samples, n), replace=False))
    images = np.stack([np.asarray(Image.open(io.BytesIO(jpeg[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))
                       for i in idx])
    return images, labels[idx].astype(np.int64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    x, y = load_split(args.split, args.samples, args.seed)
    np.savez(args.out, x=x, y=y)
    print(f"wrote {args.out}: x {x.shape} {x.dtype}, y {y.shape}")


if __name__ == "__main__":
    main()
