"""The one interface every channel-importance criterion implements, and its options' base model.

A criterion maps a dependency group to one score per current channel of the group's root (lower =
pruned first). It reads the model and the groups through a read-only GroupView (compress/pruning/view.py)
and never removes channels: the search (compress/search/) asks it for scores and hands the pruner the
channels to remove.

Subclass `Criterion` (and `CriterionOptions` for its options) and register it with
`compress.criteria.registry.register_criterion` to add one, as benchmarks/study_plugins.py does.
"""
from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict

from ..pruning.groups import GroupInfo
from ..pruning.view import GroupView


class CriterionOptions(BaseModel):
    """A criterion's options (`--criterion-option KEY=VALUE`): unknown keys are errors, strings are converted
    to the field's type, and each field's description is its help text."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NoOptions(CriterionOptions):
    """A criterion without options."""


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

    def prepare(self, view: GroupView, x: torch.Tensor | None, y: torch.Tensor | None) -> None:
        """Called with the calibration data before each pruning round; data-free criteria ignore it."""

    def scores(self, view: GroupView, info: GroupInfo, group) -> torch.Tensor:
        """One score per current channel of `info`'s root; `group` is its Torch-Pruning group (view.group)."""
        raise NotImplementedError

    def prepare_reads_model(self) -> bool:
        """Whether `prepare` after the first round runs the current model on the data (so the model's
        BatchNorm statistics must be re-estimated after each round's pruning first). True unless a
        criterion knows it does not."""
        return True

    def own_keep_fractions(self) -> dict[str, float] | None:
        """The share of its original channels each group root keeps at the criterion's own operating point
        (CMI cutoffs, MIPP), when the criterion decides how many channels a layer needs; None otherwise."""
        return None

    def group_weights(self) -> dict[str, float] | None:
        """Per group root: how much the group's average channel is worth next to other groups' in the
        knapsack. None: every group's average channel is worth the same and cost decides the widths."""
        return None

    def details(self) -> dict:
        """What drove the choices (per-layer scores, curves), for report.json."""
        return {}
