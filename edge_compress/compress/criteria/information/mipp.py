"""`mipp`: mutual-information preserving pruning (Westphal et al.): back to front, each layer keeps what
preserves its MI with the already-pruned next layer (compress/metrics/mipp.py)."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ...metrics.features import collect_features
from ...metrics.mipp import mipp_select
from ...metrics.renyi import channel_sq_distances, gram_from_sq_dist, median_sigma, paper_sigma
from ..registry import register_criterion
from .common import InformationCriterion, InformationOptions


class MippOptions(InformationOptions):
    alpha: float = Field(2.0, description="order of the Renyi entropy")
    width: Literal["median", "paper"] = Field("median", description="kernel width: median (of the whole layer's summed "
                                                                    "distances) or paper")
    confidence: float = Field(0.95, description="confidence of the bootstrap test that stops a layer's selection")
    n_boot: int = Field(20, description="bootstrap resamples")
    allocate: bool = Field(True, description="let the selection set each layer's share (the budget still decides the total)")
    seed: int = 0


class MippCriterion(InformationCriterion):
    """Back to front: each layer keeps what preserves its MI with the already-pruned next layer."""

    name = "mipp"
    needs_labels = False

    def compute(self, view, groups, x, y):
        feats = self._features(view, groups, x)
        layers = view.execution_order()
        owner = {p: g for g in groups for p, _, _ in view.producers(g.root)}
        targets = {g.root: self._next_layer(view, layers, g) for g in groups}
        extra = sorted({t for t in targets.values() if t is not None and t not in owner})
        target_feats = {n: f.tensor for n, f in collect_features(view.model, x, extra).items()} if extra else {}
        out_feats = None
        kept: dict[str, list[int]] = {}
        results = {}
        for i, g in enumerate(reversed(groups)):
            t = targets[g.root]
            if t is None:
                if out_feats is None:
                    out_feats = _model_output(view.model, x)
                target = out_feats
            elif t in owner:                     # the next layer belongs to a group already pruned
                h = owner[t]
                target = feats[h.root][:, kept.get(h.root, list(range(h.channels)))]
            else:
                target = target_feats[t]
            tg = _gram_of(target.to(self.opts.device), self.opts.width)
            d2 = channel_sq_distances(feats[g.root])
            total = d2.sum(0)
            sigma = median_sigma(total) if self.opts.width == "median" else \
                paper_sigma(x.shape[0], feats[g.root].shape[1] * feats[g.root].shape[2])
            res = mipp_select(d2, tg, sigma, alpha=self.opts.alpha, confidence=self.opts.confidence,
                              n_boot=self.opts.n_boot, seed=self.opts.seed, min_keep=1)
            kept[g.root] = res.keep
            results[g.root] = res
            self._details[g.root] = {**res.to_dict(), "target": t or "model output"}
            self._tick("mipp", i + 1, len(groups))
        if self.opts.allocate:
            channels = {g.root: g.channels for g in groups}
            self._own_keep = {r: len(res.keep) / channels[r] for r, res in results.items()}
        return {r: res.scores for r, res in results.items()}

    @staticmethod
    def _next_layer(view, layers: list[str], g) -> str | None:
        mine = {p for p, _, _ in view.producers(g.root)}
        after = layers[layers.index(g.root) + 1:] if g.root in layers else []
        return next((n for n in after if n not in mine), None)


def _gram_of(features: torch.Tensor, width: str) -> torch.Tensor:
    flat = features.reshape(features.shape[0], -1).to(torch.float64)
    d2 = channel_sq_distances(flat.unsqueeze(1))[0].to(torch.float64)
    sigma = median_sigma(d2) if width == "median" else paper_sigma(flat.shape[0], flat.shape[1])
    return gram_from_sq_dist(d2, sigma)


def _model_output(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        outs = [model(x[i:i + 64]) for i in range(0, len(x), 64)]
    outs = [o[0] if isinstance(o, (tuple, list)) else o for o in outs]
    return torch.cat(outs).reshape(len(x), -1)


register_criterion("mipp", "mutual-information preserving pruning: back to front, keep what preserves the MI with the "
                   "next layer (Westphal et al.)", MippOptions)(MippCriterion)
