"""Experimental criteria for benchmarks/info_study.py, registered on import through the public plugin
interface (compress.criteria.registry.register_criterion): fisher, combo, consumer, refit, curve, and
`<criterion>-study` for every information criterion, which adds the study's losing options
`allocation=kl` (benchmarks/output_kl_weights.py) and `widths=l1` (BENCHMARKS.md, "Information criteria
study", for how they measured)."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, create_model, field_validator

from benchmarks.output_kl_weights import output_information_scales
from edge_compress.compress.criteria.base import mean_normalised
from edge_compress.compress.criteria.information.common import InformationCriterion, InformationOptions, l1_scores
from edge_compress.compress.criteria.information.consumer_mi import ConsumerMiCriterion, ConsumerMiOptions
from edge_compress.compress.criteria.registry import (criterion_names, criterion_options, make_criterion,
                                                      register_criterion)
from edge_compress.compress.metrics import consumer_mi
from edge_compress.compress.metrics.features import FeatureCapture


def in_order_of(order: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """`values` re-assigned so that they rank like `order`: the k-th lowest of `order` gets the k-th
    lowest value. The set of values (what the knapsack weighs layers by) is unchanged."""
    out = torch.empty_like(values, dtype=torch.float64)
    out[torch.argsort(order.to(torch.float64), stable=True)] = torch.sort(values.to(torch.float64)).values
    return out


class FisherOptions(InformationOptions):
    target: Literal["predicted", "true", "sampled", "kl"] = "predicted"   # predicted: KL to the model's own output
    batch_size: int = 64
    stat: Literal["fisher", "abs", "absmean"] = "fisher"   # fisher: mean_n (sum a g)^2 ; abs: |sum_n sum a g|; absmean: mean_n |sum a g|


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


register_criterion("fisher", "Fisher", FisherOptions)(FisherCriterion)


class ComboOptions(InformationOptions):
    info: str = "fisher"
    weight: str = "l1"   # any registered criterion (options as for info): score = weight_norm * info_norm ** power

    @field_validator("weight")
    @classmethod
    def _known_weight(cls, weight: str) -> str:
        if weight.partition("/")[0] not in criterion_names():
            raise ValueError(f"unknown weight criterion {weight!r}; choose one of {', '.join(criterion_names())}")
        return weight


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

    def prepare(self, view, x, y):
        self.i._scores = {} if self.opts.rescore else self.i._scores
        self.i.prepare(view, x, y)
        if getattr(self.w, "needs_data", False):   # a data-driven weight criterion is scored too
            self.w.prepare(view, x, y)

    def scores(self, pruner, info, group):
        w = mean_normalised(self.w.scores(pruner, info, group))
        return w * mean_normalised(self.i.scores(pruner, info, group)).clamp_min(1e-12) ** self.opts.power


register_criterion("combo", "combo", ComboOptions)(ComboCriterion)


class ConsumerOptions(ConsumerMiOptions):
    # What a removal costs, from the same sampled contributions as consumer-mi (which is mode=r2):
    # r2: sum_o (1 - rho_o^2); corr: sum_o (1 - rho_o); gmi: -sum_o I_o, the Gaussian MI itself;
    # greedy: the squared reconstruction error (ThiNet); energy: each channel's own contribution energy.
    mode: Literal["r2", "corr", "gmi", "greedy", "energy"] = "r2"
    gamma: bool = False      # weight output channel o by the next BatchNorm's gamma_o^2 (r2, corr, gmi)
    tie: float = 0.0         # the variants were measured before consumer-mi's tie rule (r2, corr, gmi)


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

    def _rank(self, z, xs, consumers, weights, magnitude=None):
        mode = self.opts.mode
        if mode == "energy":
            return xs.pow(2).mean((0, 1))
        if mode == "greedy":
            return _squared_error_greedy(xs)
        if self.opts.gamma:   # on top of the residual shares (residual=true, the default)
            gamma = torch.cat([_following_gamma(self._pruner, name, outputs) for name, outputs in consumers])
            weights = gamma if weights is None else weights * gamma.to(weights)
        return consumer_mi.greedy_removal_scores(z, xs, _LOSSES[mode], weights, magnitude, self.opts.tie)


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


register_criterion("consumer", "consumer", ConsumerOptions)(ConsumerCriterion)


# -- refit: what the consumer keeps when its weights are re-fitted ---------------------------------

class RefitOptions(ConsumerMiOptions):
    # loss = (1 - mix) * sum_o w_o (1 - rho_o^2) [the consumer's weights as they are, consumer-mi]
    #      + mix * sum_o w_o (1 - R_o^2)          [the consumer's weights re-fitted by least squares]
    samples: int = 4096
    mix: float = Field(1.0, ge=0, le=1)
    ridge: float = 1e-4      # times the mean feature variance, on the Gram matrix's diagonal


class _RefitTracker:
    """sum_o w_o (1 - R_o^2) of the consumer's outputs regressed on the kept channels' patches."""

    def __init__(self, p, w, blocks, weights, ridge):
        m, cin, k = p.shape
        x = p.reshape(m, cin * k)
        x = x - x.mean(0)
        z = x @ w.reshape(w.shape[0], -1).T
        var_z = (z * z).mean(0)
        live = var_z > 0
        z, self.var_z = z[:, live], var_z[live]
        self.w = (weights[live] if weights is not None else torch.ones_like(self.var_z))
        g = x.T @ x / m
        g += ridge * g.diagonal().mean() * torch.eye(len(g), dtype=g.dtype)
        cz = x.T @ z / m
        self.a = torch.linalg.inv(g)
        self.beta = self.a @ cz
        self.lost = 1 - (cz * self.beta).sum(0) / self.var_z     # per output, ~0 with every channel
        self.blocks = blocks                                      # (C_group, K) feature indices, -1: not read
        self.eye = torch.eye(blocks.shape[1], dtype=g.dtype)

    def candidates(self, left):
        b = self.blocks.clamp_min(0)
        abb = self.a[b[:, :, None], b[:, None, :]]
        dead = (~left) | (self.blocks[:, 0] < 0)
        abb[dead] = self.eye
        bb = self.beta[b]                                         # C, K, O
        delta = (bb * torch.linalg.solve(abb, bb)).sum(1)        # C, O
        delta[dead] = 0
        return ((self.lost[None] + delta / self.var_z[None]) * self.w[None]).sum(1)

    def remove(self, j):
        if self.blocks[j, 0] < 0:
            return
        bj = self.blocks[j]
        s = self.a[:, bj]
        inv = torch.linalg.inv(self.a[bj][:, bj])
        delta = (self.beta[bj] * (inv @ self.beta[bj])).sum(0)
        self.lost = self.lost + delta / self.var_z
        self.beta = self.beta - s @ (inv @ self.beta[bj])
        self.a = self.a - s @ inv @ s.T


class RefitCriterion(ConsumerMiCriterion):
    """Greedy removal keeping what each consumer's output keeps once its weights are re-fitted (the
    Gaussian MI between the original output and the kept channels' input patches), optionally mixed
    with consumer-mi's loss for the weights as they are."""
    name = "refit"

    def compute(self, pruner, groups, x, y):
        model = pruner.model
        modules = dict(model.named_modules())
        reads = pruner.readers()
        usable = {g.root: [(n, i, r) for n, i, r in reads.get(g.root, []) if n in modules and consumer_mi.dense(modules[n])]
                  for g in groups}
        usable = {k: v for k, v in usable.items() if v}
        names = {n for v in usable.values() for n, _, _ in v}
        gen = torch.Generator().manual_seed(self.opts.seed)
        parts = {n: [] for n in names}

        def capture(name, module, inputs, samples):
            parts[name].append(consumer_mi.sampled_patches(module, inputs, samples, gen).float())

        shares, _ = self._reader_pass(model, names, capture, x)
        out = {}
        tp_groups = pruner.root_groups_by_name()
        for g in groups:
            if g.root not in usable:
                out[g.root] = l1_scores(tp_groups[g.root]).to(torch.float64)
                continue
            trackers = []
            for n, idxs, root_idxs in usable[g.root]:
                p = torch.cat(parts[n]).double()
                mod = modules[n]
                w = mod.weight.detach().double().reshape(mod.weight.shape[0], p.shape[1], p.shape[2])
                k = p.shape[2]
                blocks = torch.full((g.channels, k), -1, dtype=torch.long)
                cols = torch.full((g.channels,), -1, dtype=torch.long)
                for i_c, r in zip(idxs, root_idxs):
                    blocks[r] = torch.arange(i_c * k, (i_c + 1) * k)
                    cols[r] = i_c
                share = shares.get(n)
                if self.opts.mix > 0:
                    trackers.append((self.opts.mix, _RefitTracker(p, w, blocks, share, self.opts.ridge)))
                if self.opts.mix < 1:   # consumer-mi's loss, the consumer's weights as they are
                    xs = torch.einsum("mck,ock->moc", p, w)[:, :, cols.clamp_min(0)] * (cols >= 0).to(p.dtype)
                    z = torch.einsum("mck,ock->mo", p, w)
                    trackers.append((1 - self.opts.mix, consumer_mi.CorrelationLoss(z, xs, weights=share)))

            def loss(left, trackers=trackers):
                return sum(c * t.candidates(left) for c, t in trackers)

            def remove(j, trackers=trackers):
                for _, t in trackers:
                    t.remove(j)

            out[g.root] = consumer_mi.greedy_removal(loss, remove, g.channels)
            self._details[g.root] = {"consumers": [n for n, _, _ in usable[g.root]]}
        return out


register_criterion("refit", "refit", RefitOptions)(RefitCriterion)


# -- consumer-mi with another width curve (experimental) -------------------------------------------

class CurveOptions(ConsumerMiOptions):
    # How many channels each layer keeps, from consumer-mi's order: the knapsack reads the sorted curve
    # sort(l1)^blend x sort(consumer-mi)^(1 - blend) (each divided by its layer mean) re-assigned in
    # consumer-mi's order; blend 0 is consumer-mi, blend 1 is widths=l1.
    blend: float = Field(0.5, ge=0, le=1)
    # diagnostic: groups whose root starts with this prefix are ordered by L1 instead ("" none)
    l1_prefix: str = ""


class CurveCriterion(ConsumerMiCriterion):
    """consumer-mi's order inside each layer, widths from a blend of its curve and L1's (CurveOptions)."""
    name = "curve"

    def scores(self, pruner, info, group):
        l1 = l1_scores(group).to(torch.float64)
        s = self._scores[info.root][info.kept].to(torch.float64)
        if self.opts.l1_prefix and info.root.startswith(self.opts.l1_prefix):
            s = l1
        # both sorted curves rise, so their product does too and in_order_of hands it out in s's order
        curve = torch.sort(mean_normalised(s)).values ** (1 - self.opts.blend) \
            * torch.sort(mean_normalised(l1)).values ** self.opts.blend
        return in_order_of(s, curve).to(torch.float32)


register_criterion("curve", "curve", CurveOptions)(CurveCriterion)


# -- the product's information criteria with the study's losing options ---------------------------

# Options the study measured and the product dropped (BENCHMARKS.md, "Information criteria study"):
# allocation=kl weighs each group in the knapsack by the output information its weakest channels carry,
# measured before every round (benchmarks/output_kl_weights.py); widths=l1 hands the knapsack the layer's
# L1 scores re-assigned in the criterion's order, so magnitude sets each layer's width.
STUDY_OPTIONS = {"allocation": (Literal["none", "kl"], "none"), "widths": (Literal["own", "l1"], "own")}


def _study_variant(name: str):
    """Register `<name>-study`: criterion `name` plus STUDY_OPTIONS."""
    base_class = type(make_criterion(name))
    options = create_model(f"{base_class.__name__}StudyOptions", __base__=criterion_options(name), **STUDY_OPTIONS)

    class Variant(base_class):
        def __init__(self, opts):
            super().__init__(opts)
            self._weights, self._weight_details = None, {}

        def prepare(self, view, x, y):
            super().prepare(view, x, y)
            if self.opts.allocation == "kl":   # every round: the weight depends on what is left of each layer
                self._weights, self._weight_details = output_information_scales(view, self, x)

        def group_weights(self):
            return self._weights

        def scores(self, view, info, group):
            if self.opts.widths != "l1":
                return super().scores(view, info, group)
            return in_order_of(self.weighted_scores(info, group), l1_scores(group)).to(torch.float32)

        def details(self):
            out = super().details()
            if self._weight_details:
                out["allocation"] = self._weight_details   # the last round's weights
            return out

    Variant.__name__ = Variant.__qualname__ = f"{base_class.__name__}Study"
    register_criterion(f"{name}-study", f"{name} with the study's allocation and widths options", options)(Variant)


for _name in ("cmi", "mipp", "mi-gradient", "capacity-independence", "consumer-mi"):
    _study_variant(_name)
