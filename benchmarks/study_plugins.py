"""Experimental criteria for benchmarks/info_study.py (registered on import)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from compress.criteria import criterion_names, make_criterion, mean_normalised, register_criterion
from compress.info.features import FeatureCapture
from compress.info import consumer_mi
from compress.info_criteria import ConsumerMiCriterion, ConsumerMiOptions, InformationCriterion, _Common, _options


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
    weight: str = "l1"   # any registered criterion (options as for info): score = weight_norm * info_norm ** power

    def _check_weight(self) -> None:
        if self.weight.partition("/")[0] not in criterion_names():
            raise ValueError(f"unknown weight criterion {self.weight!r}; choose one of {', '.join(criterion_names())}")


def _inner(text: str) -> tuple[str, dict]:
    """`name/key~value+key~value` -> (name, options): a criterion inside a combo configuration."""
    name, _, rest = text.partition("/")
    return name, dict(s.split("~") for s in rest.split("+") if s)


class ComboCriterion(InformationCriterion):
    """Product of a magnitude criterion and an information criterion, each normalised by its mean."""
    name = "combo"

    def __init__(self, opts):
        super().__init__(opts)
        name, kv = _inner(opts.weight)
        self.w = make_criterion(name, kv)
        name, kv = _inner(opts.info)
        kv.setdefault("weight", "none")   # the inner criterion alone (cmi and capacity-independence default to l1)
        self.i = make_criterion(name, kv)

    def prepare(self, pruner, x, y):
        self.i._scores = {} if self.opts.rescore else self.i._scores
        self.i.prepare(pruner, x, y)
        if getattr(self.w, "needs_data", False):   # a data-driven weight criterion is scored too
            self.w.prepare(pruner, x, y)

    def scores(self, pruner, info, group):
        w = mean_normalised(self.w.scores(pruner, info, group))
        return w * mean_normalised(self.i.scores(pruner, info, group)).clamp_min(1e-12) ** self.opts.power


register_criterion("combo", "combo")(lambda o: ComboCriterion(_options(ComboOptions, "combo", o)))


@dataclass
class ConsumerOptions(ConsumerMiOptions):
    # What a removal costs, from the same sampled contributions as consumer-mi (which is mode=r2):
    # r2: sum_o (1 - rho_o^2); corr: sum_o (1 - rho_o); gmi: -sum_o I_o, the Gaussian MI itself;
    # greedy: the squared reconstruction error (ThiNet); energy: each channel's own contribution energy.
    mode: str = "r2"
    gamma: bool = False      # weight output channel o by the next BatchNorm's gamma_o^2 (r2, corr, gmi)

    def __post_init__(self):
        super().__post_init__()
        if self.mode not in _LOSSES and self.mode not in ("greedy", "energy"):
            raise ValueError(f"unknown mode {self.mode!r}")


_LOSSES = {
    "r2": consumer_mi.information_lost,
    "corr": lambda rho: 1 - rho.clamp(0, 1),
    "gmi": lambda rho: 0.5 * torch.log((1 - rho.clamp(0, 1) ** 2).clamp_min(1e-9)),
}


class ConsumerCriterion(ConsumerMiCriterion):
    """consumer-mi with another loss over the same sampled contributions (ConsumerOptions.mode)."""
    name = "consumer"

    def compute(self, pruner, groups, x, y):
        self._pruner = pruner   # for the BatchNorm after each consumer (gamma=true)
        return super().compute(pruner, groups, x, y)

    def _rank(self, z, xs, consumers, weights):
        mode = self.opts.mode
        if mode == "energy":
            return xs.pow(2).mean((0, 1))
        if mode == "greedy":
            return _squared_error_greedy(xs)
        if self.opts.gamma:   # on top of the residual shares (residual=true, the default)
            gamma = torch.cat([_following_gamma(self._pruner, name, outputs) for name, outputs in consumers])
            weights = gamma if weights is None else weights * gamma.to(weights)
        return consumer_mi.greedy_removal_scores(z, xs, _LOSSES[mode], weights)


def _squared_error_greedy(xs: torch.Tensor) -> torch.Tensor:
    """Removal order minimising the summed squared contribution of the removed channels (ThiNet)."""
    x = xs.reshape(-1, xs.shape[2])
    gram = x.T @ x / len(x)
    c = gram.shape[0]
    removed_dot, err, score = torch.zeros(c, dtype=gram.dtype), 0.0, torch.zeros(c, dtype=gram.dtype)
    left = torch.ones(c, dtype=torch.bool)
    for step in range(c):
        cand = err + 2 * removed_dot + torch.diagonal(gram)   # ||r + x_j||^2
        cand[~left] = float("inf")
        j = int(torch.argmin(cand))
        err = float(cand[j])
        removed_dot = removed_dot + gram[:, j]
        left[j] = False
        score[j] = max(err, float(score.max())) + step * 1e-12
    return score


def _following_gamma(pruner, name: str, outputs) -> torch.Tensor:
    """gamma^2 of the BatchNorm right after layer `name` (ones if there is none), at the sampled outputs."""
    modules = dict(pruner.model.named_modules())
    order = pruner.execution_order((torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d))
    channels = modules[name].weight.shape[0]
    gamma = torch.ones(channels, dtype=torch.float64)
    for n in order[order.index(name) + 1:]:
        m = modules[n]
        if isinstance(m, torch.nn.BatchNorm2d) and m.num_features == channels:
            gamma = m.weight.detach().double() ** 2
            break
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            break
    return gamma if outputs is None else gamma[outputs]


register_criterion("consumer", "consumer")(lambda o: ConsumerCriterion(_options(ConsumerOptions, "consumer", o)))
