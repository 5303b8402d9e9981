"""Depth pruning: removing a whole residual block whose inner channels have shrunk to the minimum.

At batch 1 on small devices a layer costs a fixed overhead whatever its width, so once a block's inner
channels are at the minimum, removing the block is the only move left that saves that overhead. A
block qualifies when its output is relu(residual(x) + x) with an identity shortcut: the ResNet basic and
bottleneck blocks of compress.archs and of torchvision-style models (`shortcut` an nn.Identity, or
`downsample` None). Without the residual branch that is relu(x), so the block is replaced by an
nn.ReLU: exact for any input, and a no-op on the non-negative inputs these blocks receive.
"""
from __future__ import annotations

import torch.nn as nn

BLOCK_CLASSES = ("BasicBlock", "Bottleneck")


def removable_blocks(model: nn.Module) -> list[str]:
    """Names of residual blocks with an identity shortcut, in module order."""
    out = []
    for name, m in model.named_modules():
        if type(m).__name__ not in BLOCK_CLASSES or not name:
            continue
        if isinstance(getattr(m, "shortcut", None), nn.Identity) or \
                (hasattr(m, "downsample") and getattr(m, "downsample") is None):
            out.append(name)
    return out


def remove_block(model: nn.Module, name: str) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, nn.ReLU())
