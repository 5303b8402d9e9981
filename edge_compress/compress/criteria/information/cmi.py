"""`cmi`: conditional mutual information with the labels, greedy per layer (Vu-Van et al.), with cutoffs
that set each layer's share (compress/metrics/cmi.py)."""
from __future__ import annotations

from dataclasses import fields
from typing import Literal

from pydantic import Field, model_validator

from ...metrics.cmi import CmiConfig, layer_distances, rank_layers
from ..registry import register_criterion
from .common import InformationCriterion, InformationOptions


class CmiOptions(InformationOptions):
    """The method's own settings (CmiConfig, validated there) plus the pipeline's."""

    alpha: float = Field(2.0, description="order of the Renyi entropy")
    # The paper's kernel width and the square root of the information term measured best (BENCHMARKS.md,
    # "Information criteria study", CMI configurations).
    width: Literal["median", "paper"] = Field("paper", description="kernel width rule")
    cutoff: Literal["permutation", "scree", "xmeans", "none"] = Field(
        "permutation", description="where each layer's greedy ranking stops (sets the layer's share)")
    permutations: int = Field(100, description="permutations of the cutoff's test")
    eta: float = Field(0.05, description="significance level of the permutation cutoff")
    conditioning: Literal["per-layer", "compact", "full"] = Field("per-layer", description="what each layer's CMI "
                                                                                           "is conditioned on")
    order: Literal["forward", "backward", "bidirectional"] = Field("forward", description="the order layers are ranked in")
    seed: int = 0
    allocate: bool = Field(True, description="let the cutoffs set each layer's share (the budget still decides the total)")
    weight: Literal["none", "l1"] = Field("l1", description="information-weighted magnitude (BENCHMARKS.md)")
    power: float = Field(0.5, gt=0, description="with weight=l1: score = magnitude x information ** power")
    features: Literal["full", "pooled"] = Field(
        "full", description="full (every position of the map) or pooled (the map's mean: one number per sample)")

    @model_validator(mode="after")
    def _valid_config(self):
        self.config()   # CmiConfig checks its own settings
        return self

    def config(self) -> CmiConfig:
        return CmiConfig(**{f.name: getattr(self, f.name) for f in fields(CmiConfig)})


class CmiCriterion(InformationCriterion):
    name = "cmi"

    def compute(self, view, groups, x, y):
        feats = self._features(view, groups, x, pooled=self.opts.features == "pooled")
        ky = self._label_gram(y.to(self.opts.device))
        done = []

        def distances(root):
            return layer_distances(feats[root], self.opts.width)

        def tick(root):
            done.append(root)
            self._tick("cmi", len(done), len(groups))

        results = rank_layers([g.root for g in groups], distances, ky, self.opts.config(), tick)
        self._details = {r: res.to_dict() for r, res in results.items()}
        if self.opts.allocate and self.opts.cutoff != "none":
            self._own_keep = {r: res.keep / res.channels for r, res in results.items()}
        return {r: res.scores() for r, res in results.items()}


register_criterion("cmi", "conditional mutual information with the labels, greedy per layer, with cutoffs that set each "
                   "layer's share (Vu-Van et al.)", CmiOptions)(CmiCriterion)
