"""Re-estimate BatchNorm statistics after pruning.

Removing channels changes what every later layer sees, so the running means and variances stored in
BatchNorm no longer match; a few hundred real samples through the network in train mode (BatchNorm
only; dropout stays off) restore them. Never run on synthetic data: noise statistics would replace
the real ones.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> int:
    """Replace running statistics with the exact average over `x`; return the number of BN layers."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or len(x) < 2:
        return 0
    saved = [(m, m.momentum, m.training) for m in bns]
    was_training = model.training
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches instead of an exponential one
        m.train()
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                chunk = x[i:i + batch_size]
                if len(chunk) >= 2:  # BatchNorm cannot use a batch of one in train mode
                    model(chunk)
    finally:
        for m, momentum, training in saved:
            m.momentum = momentum
            m.train(training)
        model.train(was_training)
    return len(bns)
