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
        if getattr(self.w, "needs_data", False):   # a data-driven weight criterion is scored too
            self.w.prepare(pruner, x, y)

    def scores(self, pruner, info, group):
        w = mean_normalised(self.w.scores(pruner, info, group))
        return w * mean_normalised(self.i.scores(pruner, info, group)).clamp_min(1e-12) ** self.opts.power


register_criterion("combo", "combo")(lambda o: ComboCriterion(_options(ComboOptions, "combo", o)))


@dataclass
class ConsumerOptions(_Common):
    mode: str = "greedy"     # greedy: joint removal order (ThiNet); energy: each channel's own contribution;
    # corr: sum_o (1 - rho_o); gmi: Gaussian MI between full and pruned output, -1/2 log(1 - rho_o^2)
    gamma: bool = False      # weight output channel o by the following BatchNorm's gamma_o^2
    samples: int = 4096      # sampled (image, position, output channel) entries per consumer
    weight: str = "none"
    seed: int = 0


class ConsumerCriterion(InformationCriterion):
    """What the layers reading a group lose when its channels go: each channel's contribution to the
    consumers' outputs at sampled positions; `greedy` orders removal by the joint reconstruction error."""
    name = "consumer"
    needs_labels = False

    def compute(self, pruner, groups, x, y):
        model = pruner.model
        modules = dict(model.named_modules())
        members = pruner.member_map()
        cons = {g.root: [n for n in members[g.root][1] if n in modules] for g in groups}
        names = sorted({n for c in cons.values() for n in c})
        inputs = {}

        def hook(name):
            def f(m, args):
                inputs[name] = args[0].detach()
            return f
        handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names]
        model.eval()
        try:
            with torch.no_grad():
                model(x)
        finally:
            for h in handles:
                h.remove()
        gen = torch.Generator().manual_seed(self.opts.seed)
        out = {}
        for g in groups:
            parts, wts = [], []
            for n in cons[g.root]:
                m, a = modules[n], inputs[n].double()
                if isinstance(m, torch.nn.Conv2d) and m.groups == 1 and m.in_channels == g.channels:
                    cols = F.unfold(a, m.kernel_size, m.dilation, m.padding, m.stride)   # N, C*k*k, L
                    N, _, L = cols.shape
                    k = m.kernel_size[0] * m.kernel_size[1]
                    M = self.opts.samples
                    if self.opts.mode in ("corr", "gmi", "r2"):   # every output channel at M positions: (M, O, C)
                        M = max(64, M // 8)
                        ni, li = torch.randint(N, (M,), generator=gen), torch.randint(L, (M,), generator=gen)
                        p = cols[ni, :, li].reshape(M, g.channels, k)
                        w = m.weight.detach().double().reshape(m.out_channels, g.channels, k)
                        parts.append(torch.einsum("mck,ock->moc", p, w))
                        wts.append(_following_gamma(pruner, modules, n, m.out_channels) if self.opts.gamma
                                   else torch.ones(m.out_channels, dtype=torch.float64))
                        continue
                    ni = torch.randint(N, (M,), generator=gen)
                    li = torch.randint(L, (M,), generator=gen)
                    oi = torch.randint(m.out_channels, (M,), generator=gen)
                    p = cols[ni, :, li].reshape(M, g.channels, k)
                    w = m.weight.detach().double()[oi].reshape(M, g.channels, k)
                    parts.append((p * w).sum(2))
                elif isinstance(m, torch.nn.Linear) and m.in_features == g.channels:
                    M = self.opts.samples
                    ni = torch.randint(len(a), (M,), generator=gen)
                    oi = torch.randint(m.out_features, (M,), generator=gen)
                    parts.append(a.reshape(len(a), -1)[ni] * m.weight.detach().double()[oi])
            if not parts:
                out[g.root] = torch.ones(g.channels, dtype=torch.float64)
                continue
            if self.opts.mode in ("corr", "gmi", "r2"):
                out[g.root] = _corr_greedy(torch.cat(parts, 1), torch.cat(wts), self.opts.mode)
                continue
            X = torch.cat(parts, 0)   # samples x channels
            if self.opts.mode == "energy":
                out[g.root] = X.pow(2).mean(0)
                continue
            G = X.T @ X / len(X)      # ||sum_T x||^2 = 1' G_TT 1: greedy on the Gram matrix
            removed, r_dot, err = [], torch.zeros(g.channels, dtype=torch.float64), 0.0
            score = torch.zeros(g.channels, dtype=torch.float64)
            left = torch.ones(g.channels, dtype=torch.bool)
            for t in range(g.channels):
                # error after also removing j: err + 2 r.x_j + G_jj
                cand = err + 2 * r_dot + torch.diagonal(G)
                cand[~left] = float("inf")
                j = int(torch.argmin(cand))
                err = float(cand[j])
                r_dot = r_dot + G[:, j]
                left[j] = False
                score[j] = max(err, float(score.max()))   # removal order, monotone
            out[g.root] = score + 1e-12
        return out


def _following_gamma(pruner, modules, name, channels):
    order = pruner.execution_order((torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d))
    for n in order[order.index(name) + 1:]:
        m = modules.get(n)
        if isinstance(m, torch.nn.BatchNorm2d) and m.num_features == channels:
            return m.weight.detach().double() ** 2
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            break
    return torch.ones(channels, dtype=torch.float64)


def _corr_greedy(X: torch.Tensor, w: torch.Tensor | None = None, mode: str = "corr") -> torch.Tensor:
    """Removal order minimising sum_o (1 - corr(z_o, z_o without the removed channels)): what BatchNorm
    re-estimation after the consumer cannot undo (it restores each output channel's mean and variance)."""
    X = X - X.mean(0, keepdim=True)
    M, O, C = X.shape
    G = torch.einsum("moi,moj->oij", X, X) / M          # O, C, C
    vz = G.sum((1, 2)).clamp_min(1e-30)                  # var z_o
    cz = G.sum(1)                                        # O, C: cov(z_o, x_j)
    diag = torch.diagonal(G, dim1=1, dim2=2)             # O, C
    cT = torch.zeros(O, dtype=X.dtype)
    vT = torch.zeros(O, dtype=X.dtype)
    gT = torch.zeros(O, C, dtype=X.dtype)
    left = torch.ones(C, dtype=torch.bool)
    score = torch.zeros(C, dtype=X.dtype)
    best = 0.0
    for _ in range(C):
        c = cT[:, None] + cz
        v = vT[:, None] + 2 * gT + diag
        var_s = (vz[:, None] - 2 * c + v).clamp_min(1e-30)
        rho = (vz[:, None] - c) / torch.sqrt(vz[:, None] * var_s)
        rho = rho.clamp(-1, 1)
        if mode == "corr":
            per = 1 - rho
        elif mode == "r2":   # exp(-2 I_o), I_o the Gaussian MI between the full and the pruned output
            per = 1 - rho.clamp_min(0) ** 2
        else:
            per = 0.5 * torch.log((1 - rho ** 2).clamp_min(1e-9))
        loss = (per * (w[:, None] if w is not None else 1.0)).sum(0)
        loss[~left] = float("inf")
        j = int(torch.argmin(loss))
        best = max(best, float(loss[j]))
        score[j] = best
        cT, vT, gT = c[:, j], v[:, j], gT + G[:, j, :]
        left[j] = False
    return score + 1e-12


register_criterion("consumer", "consumer")(lambda o: ConsumerCriterion(_options(ConsumerOptions, "consumer", o)))
register_criterion("consumer-corr", "consumer-corr")(
    lambda o: ConsumerCriterion(_options(ConsumerOptions, "consumer-corr", {"mode": "corr", **(o or {})})))
