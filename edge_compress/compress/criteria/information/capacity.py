"""`capacity-independence`: information capacity (entropy) plus independence (nuclear-norm contribution)
(Tang et al.; CHIP; compress/metrics/capacity.py), weighted by magnitude by default."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...metrics import capacity as cap
from ...metrics.features import collect_features, layer_chunks
from ...metrics.memory import release_free_memory
from ..registry import register_criterion
from .common import InformationCriterion, InformationOptions, merge_producers


class CapacityOptions(InformationOptions):
    source: Literal["activations", "weights"] = Field("activations", description="activations (data-driven) or "
                                                                                 "weights (data-free)")
    capacity: Literal["gaussian", "histogram"] = Field("gaussian", description="capacity estimate (activations only)")
    balance: float = Field(1.0, ge=0, description="weight of independence against capacity")
    max_samples: int = Field(256, description="samples used for the nuclear-norm independence")
    # L1 x information ** 0.5 kept the one-shot lead and the lead after recovery (BENCHMARKS.md)
    weight: Literal["none", "l1"] = Field("l1", description="information-weighted magnitude")
    power: float = Field(0.5, gt=0, description="with weight=l1: score = magnitude x information ** power")


class CapacityCriterion(InformationCriterion):
    name = "capacity-independence"
    needs_labels = False

    @property
    def needs_data(self) -> bool:
        return self.opts.source == "activations"   # the weight-based variant is data-free

    def compute(self, view, groups, x, y):
        names = sorted({p for g in groups for p, _, _ in view.producers(g.root)})
        per_layer = {}
        if self.opts.source == "weights":
            modules = dict(view.model.named_modules())
            for n in names:
                w = modules[n].weight.detach()
                per_layer[n] = cap.capacity_independence(cap.capacity_from_weights(w), cap.independence_from_weights(w),
                                                         self.opts.balance)
        else:
            done = 0
            for chunk in layer_chunks(view.model, x, names):   # a share of the layers' features at a time
                feats = collect_features(view.model, x, chunk)
                for n in chunk:
                    f = feats.pop(n).tensor.to(self.opts.device)
                    per_layer[n] = cap.capacity_independence(
                        cap.capacity_from_activations(f, self.opts.capacity),
                        cap.independence_from_activations(f, self.opts.max_samples), self.opts.balance)
                    del f
                    done += 1
                    self._tick("capacity-independence", done, len(names))
                del feats
                release_free_memory()
        out = {g.root: merge_producers(view, g, per_layer) for g in groups}
        self._details = {r: {"scores": [round(float(v), 6) for v in s]} for r, s in out.items()}
        return out


_OPTION_TYPES: dict[str, type] = {}


register_criterion("capacity-independence", "information capacity (entropy) plus independence (nuclear-norm "
                   "contribution) (Tang et al.; CHIP)", CapacityOptions)(CapacityCriterion)
