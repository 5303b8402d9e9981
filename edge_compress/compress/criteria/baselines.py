"""One registry of channel-importance criteria, all behind one small interface.

A criterion maps a dependency group to one score per current channel of the group's root (lower =
pruned first). The Torch-Pruning baselines are that library's own `Importance` classes, so they behave
exactly as there; the information methods (compress/info_criteria.py) score from calibration data.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
import torch_pruning as tp

from .errors import CalibrationError, InputError

if TYPE_CHECKING:
    from .pruning import ChannelPruner, GroupInfo


def mean_normalised(scores: torch.Tensor) -> torch.Tensor:
    """Scores shifted to be non-negative (e.g. log-entropies) and divided by their mean (all ones when the
    mean is 0): the scale on which the knapsack compares one layer's channels with another's."""
    s = scores.detach().double().cpu()
    s = s - s.min() if s.min() < 0 else s
    m = s.mean()
    return s / m if m > 0 else torch.ones_like(s)


class Criterion:
    """Scores channels of coupled groups. `prepare` runs before each pruning round."""

    name = ""
    needs_data = False  # True: needs real calibration data (and labels or the model's predictions)

    def prepare(self, pruner: "ChannelPruner", x: torch.Tensor | None, y: torch.Tensor | None) -> None:
        """Called with the calibration data before each pruning round; data-free criteria ignore it."""

    def scores(self, pruner: "ChannelPruner", info: "GroupInfo", group) -> torch.Tensor:
        raise NotImplementedError

    def prepare_reads_model(self) -> bool:
        """Whether `prepare` after the first round runs the current model on the data (so the model's
        BatchNorm statistics must be re-estimated after each round's pruning first). True unless a
        criterion knows it does not."""
        return True

    def allocation(self) -> dict[str, float] | None:
        """The criterion's own keep fraction per group root, when it decides how many channels a layer needs."""
        return None

    def group_scales(self) -> dict[str, float] | None:
        """Per group root: how much the group's average channel is worth next to other groups' (knapsack
        selection). None: every group's average channel is worth the same and cost decides the allocation."""
        return None

    def details(self) -> dict:
        """What drove the choices (per-layer scores, curves), for report.json."""
        return {}


class TorchPruningCriterion(Criterion):
    def __init__(self, name: str, importance: tp.importance.Importance, needs_grad: bool = False):
        self.name, self.importance, self.needs_grad = name, importance, needs_grad
        self.needs_data = needs_grad

    def prepare(self, pruner, x, y) -> None:
        if not self.needs_grad:
            return
        if x is None or y is None:
            raise CalibrationError(f"criterion {self.name!r} needs calibration data with labels (or the model's "
                                   "predictions); pass --calib")
        _accumulate_loss_gradients(pruner.model, x, y)

    def scores(self, pruner, info, group) -> torch.Tensor:
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


_CRITERIA: dict[str, tuple[Callable[[dict], Criterion], str]] = {}

# What `--criterion auto` (the default) means (BENCHMARKS.md, "Information criteria study"). With
# calibration data and recovery training (--train-data) to follow: information capacity and independence
# weighted by L1 magnitude, the one criterion that beat L1 one-shot and stayed above it after the short
# recovery at 50 % MACs on ResNet-56 and ResNet-20. Without recovery, the accuracy right after pruning is
# what ships: consumer-mi, the MI each next layer's output keeps (magnitude breaking its near-ties), which
# is ahead of it one-shot at every operating point we measured (2-4 points at 50 % MACs and at L1's
# latency there); after training it stays above L1 at that latency but falls under it at 50 % MACs. Without calibration data no information can be measured: L1, the best
# data-free criterion there, and the report says so.
DEFAULT_CRITERION = "capacity-independence"
ONE_SHOT_DEFAULT = "consumer-mi"
DATA_FREE_DEFAULT = "l1"


def resolve_criterion(name: str, have_data: bool, will_train: bool = False) -> tuple[str, str | None]:
    """The criterion `name` stands for, and a note for the report saying why when it is `auto`."""
    if name != "auto":
        return name, None
    if have_data and will_train:
        return DEFAULT_CRITERION, (f"--criterion auto used {DEFAULT_CRITERION} weighted by L1: with recovery training "
                                   f"it kept the most accuracy after training (BENCHMARKS.md)")
    if have_data:
        return ONE_SHOT_DEFAULT, (f"--criterion auto used {ONE_SHOT_DEFAULT}: without --train-data the model ships as "
                                  "pruned, and it kept the most accuracy one-shot (BENCHMARKS.md)")
    return DATA_FREE_DEFAULT, (f"--criterion auto ranked channels by {DATA_FREE_DEFAULT} magnitude because no --calib was "
                               f"given; with calibration data it uses {ONE_SHOT_DEFAULT} (or {DEFAULT_CRITERION} with "
                               "--train-data), more accurate (BENCHMARKS.md)")


def register_criterion(name: str, description: str):
    def wrap(factory: Callable[[dict], Criterion]):
        if name in _CRITERIA:
            raise ValueError(f"criterion {name!r} is registered twice")
        _CRITERIA[name] = (factory, description)
        return factory
    return wrap


def make_criterion(name: str, options: dict | None = None) -> Criterion:
    """Build criterion `name` with its options (KEY=VALUE strings or values); unknown names or keys raise InputError."""
    _load_information_criteria()
    if name not in _CRITERIA:
        raise InputError(f"unknown --criterion {name!r}; available: {', '.join(criterion_names())}")
    return _CRITERIA[name][0](dict(options or {}))


def criterion_names() -> list[str]:
    _load_information_criteria()
    return sorted(_CRITERIA)


def describe_criterion(name: str) -> str:
    _load_information_criteria()
    return _CRITERIA[name][1]


def _load_information_criteria() -> None:
    from . import info_criteria  # noqa: F401 - registers the information methods (imports the metric library)


def _baseline(name: str, description: str, factory: Callable[[], tp.importance.Importance], needs_grad=False):
    def build(options: dict) -> Criterion:
        if options:
            raise InputError(f"criterion {name!r} takes no --criterion-option (got {', '.join(options)})")
        return TorchPruningCriterion(name, factory(), needs_grad)
    register_criterion(name, description)(build)


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
