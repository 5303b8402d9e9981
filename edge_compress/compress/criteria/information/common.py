"""The machinery the information criteria share: calibration checks, scoring once (or every round) in
the original channel numbering, information-weighted magnitude, and coupled features.

Each criterion scores the channels of every prunable coupled group from calibration data, once (or before
every round with rescore=true), in the original channel numbering; the pruner's record of which original
channels survive (GroupInfo.kept) maps the scores onto the current model.

Coupled groups: a group's channel c is the same index in every layer that produces it (the convs
summed into a residual stream, a conv and the depthwise conv after it). Its feature is the
concatenation of those layers' channel-c features, so distance-based methods (CMI, MIPP) see one
variable per coupled channel; score-based methods (MI gradient, capacity-independence) average the
per-layer scores after normalising each layer by its mean.
"""
from __future__ import annotations

import logging
from typing import Callable, Literal

import torch
import torch_pruning as tp
from pydantic import Field, field_validator

from ...errors import CalibrationError
from ...metrics.features import collect_features
from ...metrics.renyi import label_gram
from ..base import Criterion, CriterionOptions, mean_normalised

log = logging.getLogger("compress")


class InformationOptions(CriterionOptions):
    """The options every information criterion takes."""

    min_samples: int = Field(32, ge=4, description="fewer calibration samples than this is an error, not a noisy score")
    rescore: bool = Field(False, description="recompute the scores before every pruning round (iterative) instead of once")
    labels: Literal["delta", "onehot"] = Field(
        "delta", description="label kernel: delta (exact for classes) or onehot (Gaussian, the CMI paper's code)")
    device: str = Field("cpu", description="where the metrics run (cpu or cuda); the model's forward passes stay "
                                           "where it is")
    weight: Literal["none", "l1"] = Field(
        "none", description="information-weighted magnitude: multiply each channel's information score by its L1 "
                            "norm over the coupled group (both divided by their layer mean); none ranks by "
                            "information alone")
    power: float = Field(1.0, gt=0, description="with weight=l1: score = magnitude x information ** power; below 1 "
                                                "the information term only re-orders channels of similar magnitude")

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but no CUDA device is visible; use device=cpu")
        if not (device == "cpu" or device.startswith("cuda")):
            raise ValueError(f"unknown device {device!r}; use cpu or cuda")
        return device


_L1 = tp.importance.GroupMagnitudeImportance(p=1)


def l1_scores(group) -> torch.Tensor:
    """L1 norm of each channel's weights over the whole coupled group (Torch-Pruning's group magnitude)."""
    return _L1(group)


class InformationCriterion(Criterion):
    """A criterion that scores every prunable group from calibration data; a family implements `compute`."""

    needs_data = True
    needs_labels = True

    def __init__(self, opts: InformationOptions):
        self.opts = opts
        self._scores: dict[str, torch.Tensor] = {}   # root -> scores over the ORIGINAL channels
        self._own_keep: dict[str, float] | None = None
        self._details: dict = {}
        self.progress: Callable[[str, int, int], None] | None = None  # (stage, done, total)

    def prepare(self, view, x, y) -> None:
        if not self._scores or self.opts.rescore:
            self._score(view, x, y)

    def prepare_reads_model(self) -> bool:
        # scored once unless rescore; a subclass with its own prepare is assumed to read the model
        if type(self).prepare is not InformationCriterion.prepare:
            return True
        return bool(self.opts.rescore)

    def _score(self, view, x, y) -> None:
        if self.needs_data:
            self._check_data(x, y)
        groups = [g for g in view.prunable_groups]
        order = {n: i for i, n in enumerate(view.execution_order())}
        groups.sort(key=lambda g: order.get(g.root, len(order)))
        current = self.compute(view, groups, x, y)
        for g in groups:
            s = current[g.root].detach().to(torch.float64).cpu()
            if s.numel() != g.channels or not torch.isfinite(s).all():
                raise CalibrationError(f"{self.name}: no usable scores for {g.root} (NaN, or {s.numel()} for "
                                       f"{g.channels} channels); check the calibration data")
            full = torch.full((g.original_channels,), float("-inf"), dtype=torch.float64)
            full[g.kept] = s
            self._scores[g.root] = full

    def _check_data(self, x, y) -> None:
        if x is None or len(x) < self.opts.min_samples:
            raise CalibrationError(f"criterion {self.name!r} needs at least {self.opts.min_samples} calibration samples "
                                   f"(got {0 if x is None else len(x)}); pass more with --calib / --calib-samples, or "
                                   "lower --criterion-option min_samples")
        if not torch.isfinite(x).all():
            raise CalibrationError("the calibration data contains NaN or inf values; clean it before pruning")
        if self.needs_labels:
            if y is None:
                raise CalibrationError(f"criterion {self.name!r} needs labels or the model's predictions; pass --calib")
            if len(torch.unique(y)) < 2:
                raise CalibrationError(f"the calibration labels have a single class, so no channel carries information "
                                       f"about them and {self.name!r} cannot rank channels; use data with several classes")

    def compute(self, view, groups, x, y) -> dict[str, torch.Tensor]:
        """Scores for the CURRENT channels of each group, keyed by root."""
        raise NotImplementedError

    def scores(self, view, info, group) -> torch.Tensor:
        return self.weighted_scores(info, group).to(torch.float32)

    def weighted_scores(self, info, group) -> torch.Tensor:
        """The scores of `info`'s current channels in float64, weighted by magnitude with weight=l1."""
        if info.root not in self._scores:
            raise CalibrationError(f"{self.name}: {info.root} was not scored; the criterion was not prepared with data")
        s = self._scores[info.root][info.kept]
        if self.opts.weight != "none":
            # Magnitude says how much a channel contributes, information how much of that is worth keeping
            # (BENCHMARKS.md, "Information criteria study"): each term normalised by its layer mean, so the
            # product has the same scale in every layer.
            s = mean_normalised(l1_scores(group)) * mean_normalised(s) ** self.opts.power
        return s

    def own_keep_fractions(self):
        return self._own_keep

    def details(self) -> dict:
        return {"options": self.opts.model_dump(), "layers": self._details}

    # helpers for subclasses

    def _tick(self, stage: str, done: int, total: int) -> None:
        if self.progress:
            self.progress(stage, done, total)

    def _features(self, view, groups, x, pooled: bool = False) -> dict[str, torch.Tensor]:
        """Per group: (N, C_root, D) features, each coupled channel's maps from every producer concatenated
        (`pooled`: each map averaged over its positions, one number per producer)."""
        producers = {g.root: view.producers(g.root) for g in groups}
        names = sorted({p for prods in producers.values() for p, _, _ in prods})
        feats = collect_features(view.model, x, names)
        out = {}
        for g in groups:
            parts = []
            for layer, idxs, root_idxs in producers[g.root]:
                f = feats[layer].tensor
                flat = f.reshape(f.shape[0], f.shape[1], -1)
                mapped = flat.new_zeros(flat.shape[0], g.channels, flat.shape[2])
                mapped[:, root_idxs] = flat[:, idxs]
                parts.append(mapped.mean(2, keepdim=True) if pooled else mapped)
            out[g.root] = torch.cat(parts, 2).to(self.opts.device)
        return out

    def _label_gram(self, y: torch.Tensor) -> torch.Tensor:
        return label_gram(y, self.opts.labels, num_classes=int(y.max()) + 1)


def _normalised(v: torch.Tensor) -> torch.Tensor:
    m = v.abs().mean()
    return v / m if m > 0 else v


def merge_producers(view, g, per_layer: dict[str, torch.Tensor]) -> torch.Tensor:
    """One score per coupled channel: the mean over its producers of their scores, each divided by its
    layer's mean."""
    total = torch.zeros(g.channels, dtype=torch.float64)
    count = torch.zeros(g.channels, dtype=torch.float64)
    for layer, idxs, root_idxs in view.producers(g.root):
        v = _normalised(per_layer[layer].to(torch.float64))
        total[root_idxs] += v[idxs]
        count[root_idxs] += 1
    return total / count.clamp_min(1)
