"""benchmarks/train_cifar.py's augmentation: every output is a 32x32 window of the 4-pixel zero-padded image,
flipped or not, so training sees the standard CIFAR crops and nothing else."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from train_cifar import augment  # noqa: E402


def test_augment_gives_padded_crops_and_flips():
    x = torch.randn(16, 3, 32, 32)
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    flips = 0
    for i in range(len(x)):
        windows = [(padded[i, :, dy:dy + 32, dx:dx + 32], f) for dy in range(9) for dx in range(9) for f in (0, 1)]
        match = [f for w, f in windows if torch.equal(out[i], w.flip(2) if f else w)]
        assert match, f"sample {i} is not a padded crop of its input"
        flips += match[0]
    assert 0 < flips < len(x)   # both orientations occur (16 fair coin flips, seeded)
