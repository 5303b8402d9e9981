"""Small helpers shared by the unit-test files (test_archs, test_model_io, test_calib, test_budget,
test_pruning, test_cost_model). Plain functions, no fixtures, so each file stays self-explanatory."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
RESNET20_FILE = SHARED / "models" / "resnet20-12fca82f.th"
RESNET56_FILE = SHARED / "models" / "resnet56-4bfd9763.th"
CIFAR_NPZ = SHARED / "data" / "cifar10" / "cifar10-jpeg.npz"


def need_shared(path: Path) -> Path:
    """Return `path`, or skip the test saying what is missing and where it was looked for."""
    if not path.exists():
        pytest.skip(f"{path.name} is not present under {SHARED} (the ../shared checkout with the pretrained "
                    "models and CIFAR-10 data); this test needs it")
    return path


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random statistics and affine parameters so that it changes the output."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def one_line(message: str) -> str:
    assert message.strip(), "error message is empty"
    assert "\n" not in message.strip(), f"error message spans several lines: {message!r}"
    return message


def forget_module(name: str) -> None:
    """Drop a test-only module (and its submodules) from sys.modules."""
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def cifar_test_images(n: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """n seeded CIFAR-10 test images from ../shared, normalised as the pretrained CIFAR ResNets expect, and labels."""
    import io

    import numpy as np
    from PIL import Image

    from edge_compress.compress.archs import IMAGENET_MEAN, IMAGENET_STD


    with np.load(need_shared(CIFAR_NPZ)) as d:
        jpeg, offsets, labels = d["test_jpeg"], d["test_offsets"], d["test_labels"]
    # The test split is stored class by class, so take a seeded sample rather than the first n.
    idx = np.sort(np.random.default_rng(seed).choice(len(labels), n, replace=False))
    images = np.stack([np.asarray(Image.open(io.BytesIO(jpeg[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))
                       for i in idx])
    assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8
    mean = np.array(IMAGENET_MEAN, np.float32)   # the statistics these ResNets were trained with
    std = np.array(IMAGENET_STD, np.float32)
    x = (images.astype(np.float32) / 255.0 - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), labels[idx].astype(np.int64)
