"""One forward pass with forward hooks on some layers, the hooks removed whatever happens: how the pruner,
the cost model and the shortcut conversion read what a model does to its layers' inputs and outputs."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn as nn


def hooked_pass(model: nn.Module, example_input: torch.Tensor,
                hooks: Iterable[tuple[nn.Module, Callable]]) -> None:
    """Run `model` once on `example_input` without gradients, each (module, hook) registered as a forward hook."""
    handles = [m.register_forward_hook(h) for m, h in hooks]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
