"""Temporarily put a model in eval mode without losing the caller's train/eval flags."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    # Flags are restored per module: a caller may deliberately keep, say, a frozen
    # BatchNorm in eval inside a model that is otherwise training.
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training
