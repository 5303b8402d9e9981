"""`mi-gradient`: |activation x gradient of the MI between output and labels| (our reading of Lee et al.,
ICIP 2020; compress/metrics/mi_gradient.py)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...metrics.mi_gradient import mi_gradient_scores
from ..registry import register_criterion
from .common import InformationCriterion, InformationOptions, merge_producers


class MiGradientOptions(InformationOptions):
    target: Literal["output", "layer"] = Field("output", description="the MI differentiated: the output's or each layer's")
    alpha: float = Field(2.0, description="order of the Renyi entropy")
    width: Literal["median", "paper"] = Field("median", description="kernel width rule")
    batch_size: int = Field(128, description="calibration images per forward pass")


class MiGradientCriterion(InformationCriterion):
    name = "mi-gradient"

    def compute(self, view, groups, x, y):
        names = sorted({p for g in groups for p, _, _ in view.producers(g.root)})
        seen = [0]

        def tick(n):
            seen[0] += n
            self._tick("mi-gradient", seen[0], len(x))

        per_layer = mi_gradient_scores(view.model, x, lambda idx: self._label_gram(y[idx]), names,
                                       target=self.opts.target, alpha=self.opts.alpha, width=self.opts.width,
                                       batch_size=self.opts.batch_size, progress=tick)
        out = {g.root: merge_producers(view, g, per_layer) for g in groups}
        self._details = {r: {"scores": [round(float(v), 6) for v in s]} for r, s in out.items()}
        return out


register_criterion("mi-gradient", "|activation x gradient of the MI between output and labels| (our reading of Lee et "
                   "al., ICIP 2020)", MiGradientOptions)(MiGradientCriterion)
