"""The Torch-Pruning baselines as criteria: that library's own `Importance` classes, so they behave
exactly as there (L1, L2, BatchNorm scale, Taylor, LAMP, FPGM, random)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
import torch_pruning as tp

from ..errors import CalibrationError
from .base import Criterion
from .registry import register_criterion


class TorchPruningCriterion(Criterion):
    """A Torch-Pruning `Importance` (any, including a user's own) as a criterion."""

    def __init__(self, name: str, importance: tp.importance.Importance, needs_grad: bool = False):
        self.name, self.importance, self.needs_grad = name, importance, needs_grad
        self.needs_data = needs_grad

    def prepare(self, view, x, y) -> None:
        if not self.needs_grad:
            return
        if x is None or y is None:
            raise CalibrationError(f"criterion {self.name!r} needs calibration data with labels (or the model's "
                                   "predictions); pass --calib")
        _accumulate_loss_gradients(view.model, x, y)

    def scores(self, view, info, group) -> torch.Tensor:
        return self.importance(group)

    def prepare_reads_model(self) -> bool:
        return self.needs_grad   # Taylor: the loss gradients of the current model every round


def _accumulate_loss_gradients(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 64) -> None:
    """Cross-entropy gradients of the parameters summed over the calibration set (for Taylor importance)."""
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    try:
        for i in range(0, len(x), batch_size):
            out = model(x[i:i + batch_size])
            out = out[0] if isinstance(out, (tuple, list)) else out
            F.cross_entropy(out.reshape(out.shape[0], -1), y[i:i + batch_size].long(), reduction="sum").backward()
    finally:
        model.train(was_training)


def _baseline(name: str, description: str, factory: Callable[[], tp.importance.Importance], needs_grad=False):
    register_criterion(name, description)(lambda options: TorchPruningCriterion(name, factory(), needs_grad))


_baseline("l1", "L1 norm of each channel's weights over the whole coupled group (Torch-Pruning)",
          lambda: tp.importance.GroupMagnitudeImportance(p=1))
_baseline("l2", "L2 norm of each channel's weights over the coupled group (Torch-Pruning)",
          lambda: tp.importance.GroupMagnitudeImportance(p=2))
_baseline("bn-scale", "absolute BatchNorm scale (network slimming; Torch-Pruning)",
          lambda: tp.importance.BNScaleImportance())
_baseline("taylor", "first-order Taylor expansion of the loss on the calibration data (Torch-Pruning)",
          lambda: tp.importance.GroupTaylorImportance(), needs_grad=True)
_baseline("lamp", "layer-adaptive magnitude (LAMP; Torch-Pruning)",
          lambda: tp.importance.LAMPImportance())
_baseline("fpgm", "distance to the filters' geometric median (FPGM; Torch-Pruning)",
          lambda: tp.importance.FPGMImportance())
_baseline("random", "random scores (a control; Torch-Pruning)",
          lambda: tp.importance.RandomImportance())
