"""Experimental criteria for benchmarks/info_study.py (registered on import)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from compress.criteria import criterion_names, make_criterion, mean_normalised, register_criterion
from compress.info.features import FeatureCapture
from compress.info_criteria import InformationCriterion, _Common, _options


@dataclass
class FisherOptions(_Common):
    target: str = "predicted"   # predicted (KL to the model's own output), true, sampled, kl
    batch_size: int = 64
    stat: str = "fisher"        # fisher: mean_n (sum a g)^2 ; abs: |sum_n sum a g|; absmean: mean_n |sum a g|


class FisherCriterion(InformationCriterion):
    name = "fisher"

    def compute(self, pruner, groups, x, y):
        model = pruner.model
        prods = {g.root: pruner.producers(g.root) for g in groups}
        names = sorted({p for ps in prods.values() for p, _, _ in ps})
        tot = {g.root: torch.zeros(g.channels, dtype=torch.float64) for g in groups}
        model.eval()
        with FeatureCapture(model, names, grad=True) as cap:
            for s in range(0, len(x), self.opts.batch_size):
                xb = x[s:s + self.opts.batch_size].clone().requires_grad_(True)
                feats = cap.run(xb)
                out = cap.output
                logp = F.log_softmax(out, 1)
                if self.opts.target == "true":
                    t = y[s:s + len(xb)]
                    loss = F.nll_loss(logp, t, reduction="sum")
                elif self.opts.target == "sampled":
                    t = torch.multinomial(logp.exp().detach(), 1, generator=torch.Generator().manual_seed(s))[:, 0]
                    loss = F.nll_loss(logp, t, reduction="sum")
                else:
                    t = logp.argmax(1)
                    loss = F.nll_loss(logp, t, reduction="sum")
                tensors = [feats[n].tensor for n in names]
                grads = torch.autograd.grad(loss, tensors, allow_unused=True)
                per = {}
                for n, a, gr in zip(names, tensors, grads):
                    assert gr is not None, n
                    per[n] = (a.detach().double() * gr.double()).flatten(2).sum(2)   # (B, C)
                for g in groups:
                    d = torch.zeros(len(xb), g.channels, dtype=torch.float64)
                    for layer, idxs, root_idxs in prods[g.root]:
                        d[:, root_idxs] += per[layer][:, idxs]
                    if self.opts.stat == "fisher":
                        tot[g.root] += d.pow(2).sum(0)
                    elif self.opts.stat == "absmean":
                        tot[g.root] += d.abs().sum(0)
                    else:
                        tot[g.root] += d.sum(0)
        model.zero_grad(set_to_none=True)
        if self.opts.stat == "abs":
            tot = {k: v.abs() for k, v in tot.items()}
        return {k: v / len(x) for k, v in tot.items()}


register_criterion("fisher", "Fisher")(lambda o: FisherCriterion(_options(FisherOptions, "fisher", o)))


@dataclass
class ComboOptions(_Common):
    info: str = "fisher"
    weight: str = "l1"   # any registered criterion: score = weight_norm * info_norm ** power

    def _check_weight(self) -> None:
        if self.weight not in criterion_names():
            raise ValueError(f"unknown weight criterion {self.weight!r}; choose one of {', '.join(criterion_names())}")


class ComboCriterion(InformationCriterion):
    """Product of a magnitude criterion and an information criterion, each normalised by its mean."""
    name = "combo"

    def __init__(self, opts):
        super().__init__(opts)
        self.w = make_criterion(opts.weight)
        name, _, rest = opts.info.partition("/")
        kv = dict(s.split("~") for s in rest.split("+") if s)
        kv.setdefault("weight", "none")   # the inner criterion alone (cmi and capacity-independence default to l1)
        self.i = make_criterion(name, kv)

    def prepare(self, pruner, x, y):
        self.i._scores = {} if self.opts.rescore else self.i._scores
        self.i.prepare(pruner, x, y)

    def scores(self, pruner, info, group):
        w = mean_normalised(self.w.scores(pruner, info, group))
        return w * mean_normalised(self.i.scores(pruner, info, group)).clamp_min(1e-12) ** self.opts.power


register_criterion("combo", "combo")(lambda o: ComboCriterion(_options(ComboOptions, "combo", o)))
