"""Channel ranking by conditional mutual information (Vu-Van, Du Thanh, Ho, Vu; arXiv 2411.18578).

Per layer, greedy forward selection: S = [], R = all channels; at each step pick the channel j of R
that maximises I(Y; Z u S u {j}) and record cmi_t = I(Y; R | Z u S), the information about the labels
Y left in the channels not chosen yet (Z: the conditioning set from other layers). A cutoff on that
curve says how many channels the layer needs. The implementation follows ALGORITHMS.md sections 1-2.

Speed: the channels of a layer share one kernel width, so the Gram of any channel set is one Gaussian
of summed squared distances; the running sum D_S is kept, every candidate of a step is evaluated in one
batched call (one exp per entry and a weighted sum for alpha = 2, one batched float64 eigvalsh
otherwise), and the rest of the layer is D_all - D_S. No Gram is rebuilt from features per candidate.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from .kmeans import xmeans_cut
from .renyi import WIDTH_RULES, channel_sq_distances, entropy, gram_from_sq_dist, median_sigma, paper_sigma

CUTOFFS = ("permutation", "scree", "xmeans", "none")
CONDITIONINGS = ("per-layer", "compact", "full")
ORDERS = ("forward", "backward", "bidirectional")
_NEGLIGIBLE = 1e-4  # CMI differences below this share of cmi_0 are rounding, not information
_NEGLIGIBLE_NATS = 1e-5
_FLOOR = math.exp(-300.0)
_FLAT = 1e-3        # scree: drops below this share of cmi_0 count as flat
_CHUNK = 64  # candidates per batched eigendecomposition (memory: CHUNK * N^2 float64)


@dataclass
class CmiConfig:
    alpha: float = 2.0
    width: str = "median"
    cutoff: str = "permutation"
    permutations: int = 100
    eta: float = 0.05
    conditioning: str = "per-layer"
    order: str = "forward"
    seed: int = 0

    def __post_init__(self):
        _choice("kernel width rule", self.width, WIDTH_RULES)
        _choice("cutoff", self.cutoff, CUTOFFS)
        _choice("conditioning", self.conditioning, CONDITIONINGS)
        _choice("layer order", self.order, ORDERS)
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.permutations < 1 or not 0 < self.eta < 1:
            raise ValueError(f"permutations must be >= 1 and eta in (0, 1), got {self.permutations}, {self.eta}")


def _choice(what: str, value: str, allowed: Iterable[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")


@dataclass
class LayerCmi:
    name: str
    order: list[int]             # channels in the order the greedy search chose them
    curve: list[float]           # cmi_0 .. cmi_C: I(Y; rest | Z u S_t) after t channels chosen (nats)
    objective: list[float]       # I(Y; Z u S_t) for t = 1 .. C
    keep: int                    # the cutoff: the first `keep` channels of `order` are kept
    cutoff: str
    sigma: float
    conditioned_on: list[str] = field(default_factory=list)
    p_values: list[float] = field(default_factory=list)          # permutation test, one per tested step
    scree_candidates: list[int] = field(default_factory=list)    # the three largest drop ratios

    @property
    def channels(self) -> int:
        return len(self.order)

    def scores(self) -> torch.Tensor:
        """Rank scores: kept channels in (0.5, 1], the rest in [0, 0.5), earlier choice = higher."""
        c, k = self.channels, self.keep
        s = torch.empty(c, dtype=torch.float64)
        for r, ch in enumerate(self.order):
            s[ch] = 1.0 - 0.5 * r / k if r < k else 0.5 * (c - r) / (c - k + 1)
        return s

    def to_dict(self) -> dict:
        return {"name": self.name, "order": self.order, "curve": _round(self.curve), "objective": _round(self.objective),
                "keep": self.keep, "channels": self.channels, "cutoff": self.cutoff, "sigma": self.sigma,
                "conditioned_on": self.conditioned_on, "p_values": _round(self.p_values),
                "scree_candidates": self.scree_candidates}


def _round(v: list[float]) -> list[float]:
    return [round(float(x), 6) for x in v]


# -- per-layer distances --------------------------------------------------------------------------

def layer_distances(features: torch.Tensor, width: str = "median") -> tuple[torch.Tensor, float]:
    """Per-channel squared distances (C, N, N) of a layer's features (N, C, ...) and the layer's shared sigma."""
    n, c = features.shape[:2]
    f = features.reshape(n, c, -1).to(torch.float64)
    if not torch.isfinite(f).all():
        raise ValueError("the layer's activations contain NaN or inf; check the calibration data and the model")
    dim = f.shape[2]
    if width == "standardized":  # z-score each channel so the paper's rule sees unit-scale data
        std = f.std(dim=(0, 2), keepdim=True)
        f = (f - f.mean(dim=(0, 2), keepdim=True)) / torch.where(std > 0, std, torch.ones_like(std))
    d2 = channel_sq_distances(f)
    if width == "median":
        sigma = median_sigma(d2)
    elif width in ("paper", "standardized"):
        sigma = paper_sigma(n, dim)
    else:
        _choice("kernel width rule", width, WIDTH_RULES)
    return d2, sigma


def _exp_neg(d: torch.Tensor, scale: float) -> torch.Tensor:
    """exp(-d / scale) in float64, exponents floored at -300.

    float64 because a greedy step compares sums of N^2 terms whose differences near the end of the
    search are far below float32 resolution (float32 sums made the order drift from the exact one).
    The floor keeps far-apart pairs (and products of two of them, e^-600) out of the denormal range,
    which CPUs process about 100x slower; it changes no sum that includes the unit diagonal.
    """
    return torch.exp((d.to(torch.float64) * (-1.0 / scale)).clamp_min_(-300.0))


@contextmanager
def _no_denormals():
    """Products of tiny Gram entries must not produce denormals either (same slowdown)."""
    changed = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if changed:
            torch.set_flush_denormal(False)


# -- joint entropies of channel sets -----------------------------------------------------------------

class _Joint:
    """H(Z, X) and H(Y, Z, X) for channel sets X of one layer (Z: fixed conditioning Gram, Y: labels).

    A set is given by its summed squared distances D_X. For alpha = 2 the entropies are weighted sums
    of the squared Gram exp(-D_X / sigma^2), which factorises over channels: with E_c = exp(-D_c / sigma^2)
    precomputed once, all candidates X = S u {j} of a greedy step are one matrix product
    E (C x N^2) @ (E_S * W) (N^2 x 2), with no exp at all. Other alphas build each candidate's Gram and
    take a batched float64 eigendecomposition.
    """

    def __init__(self, d2: torch.Tensor, sigma: float, alpha: float, ky: torch.Tensor, kz: torch.Tensor | None):
        self.d2, self.sigma, self.alpha = d2, sigma, alpha
        self.n = d2.shape[-1]
        self.has_z = kz is not None
        kz = torch.ones_like(ky) if kz is None else kz
        self.w = torch.stack([kz, kz * ky])  # (2, N, N): Hadamard factors of H(Z, .) and H(Y, Z, .)
        if alpha == 2:
            w_sq = (self.w * self.w).reshape(2, -1)
            # the same floor as _exp_neg for tiny conditioning-Gram entries; exact zeros stay zero
            self.w_sq = torch.where(w_sq > 0, w_sq.clamp_min(_FLOOR), w_sq)
            self.e = _exp_neg(d2.reshape(d2.shape[0], -1), sigma * sigma)

    def _exp(self, d: torch.Tensor) -> torch.Tensor:
        return _exp_neg(d.reshape(*d.shape[:-2], -1), self.sigma * self.sigma)

    def _from_sums(self, sums: torch.Tensor) -> torch.Tensor:
        return -torch.log(sums.to(torch.float64) / (self.n * self.n))

    def _general(self, d: torch.Tensor) -> torch.Tensor:
        """(B, N, N) summed distances -> (B, 2) entropies via eigenvalues."""
        out = []
        for chunk in d.split(_CHUNK):
            g = gram_from_sq_dist(chunk, self.sigma)
            gz = g * self.w[0] if self.has_z else g
            out.append(torch.stack([entropy(gz, self.alpha), entropy(g * self.w[1], self.alpha)], 1))
        return torch.cat(out)

    def of(self, d: torch.Tensor) -> torch.Tensor:
        """Entropies of one set (N, N) -> (2,), or of a batch (B, N, N) -> (B, 2)."""
        batch = d if d.dim() == 3 else d.unsqueeze(0)
        if self.alpha == 2:
            h = self._from_sums(self._exp(batch) @ self.w_sq.T)
        else:
            h = self._general(batch)
        return h if d.dim() == 3 else h[0]

    def candidates(self, d_base: torch.Tensor, channels: list[int]) -> torch.Tensor:
        """Entropies of base u {j} for each channel j in `channels` -> (len, 2)."""
        if self.alpha == 2:
            v = self._exp(d_base).unsqueeze(0) * self.w_sq  # (2, N^2)
            return self._from_sums(self.e.index_select(0, torch.tensor(channels, device=self.e.device)) @ v.T)
        return self._general(d_base.unsqueeze(0) + self.d2[channels])

    def permuted(self, d_bases: torch.Tensor, j: int, perms: torch.Tensor) -> torch.Tensor:
        """Entropies of base_b u pi_p(j) for bases (B, N, N) and row permutations (P, N) -> (B, P, 2)."""
        idx = perms[:, :, None] * self.n + perms[:, None, :]                # (P, N, N) flat gather index
        if self.alpha == 2:
            e_pi = self.e[j][idx.reshape(len(perms), -1)]                    # (P, N^2)
            v = self._exp(d_bases).unsqueeze(1) * self.w_sq.unsqueeze(0)    # (B, 2, N^2)
            return self._from_sums(torch.einsum("pk,bwk->bpw", e_pi, v))
        d_pi = self.d2[j].reshape(-1)[idx]
        return torch.stack([self._general(db.unsqueeze(0) + d_pi) for db in d_bases])


# -- greedy selection for one layer ----------------------------------------------------------------

def greedy_cmi(d2: torch.Tensor, sigma: float, label_gram: torch.Tensor, cfg: CmiConfig,
               cond_gram: torch.Tensor | None = None, name: str = "", generator: torch.Generator | None = None
               ) -> LayerCmi:
    """Greedy CMI selection over the channels of one layer (d2: (C, N, N) per-channel squared distances)."""
    with _no_denormals():
        return _greedy(d2, sigma, label_gram, cfg, cond_gram, name, generator)


def _greedy(d2, sigma, label_gram, cfg, cond_gram, name, generator) -> LayerCmi:
    c = d2.shape[0]
    if not torch.isfinite(d2).all():
        raise ValueError(f"layer {name}: NaN or inf in the activations' distances; check the calibration data")
    ky = label_gram.to(d2.device, torch.float64)
    kz = None if cond_gram is None else cond_gram.to(d2.device, torch.float64)
    joint = _Joint(d2, sigma, cfg.alpha, ky, kz)
    h_y = float(entropy(ky, cfg.alpha))
    d_all = d2.sum(0)
    h_all = joint.of(d_all)                      # H(Z, all), H(Y, Z, all): constant over the search
    d_s = torch.zeros_like(d_all)
    h_s = joint.of(d_s)

    def cmi_of(h_set: torch.Tensor, h_rest_and_set: torch.Tensor) -> torch.Tensor:
        # I(Y; R | Z, S) = H(Z,S,R) + H(Y,Z,S) - H(Y,Z,S,R) - H(Z,S)
        return h_rest_and_set[..., 0] + h_set[..., 1] - h_rest_and_set[..., 1] - h_set[..., 0]

    remaining = list(range(c))
    order: list[int] = []
    curve = [float(cmi_of(h_s, h_all))]
    objective: list[float] = []
    p_values: list[float] = []
    testing, keep = cfg.cutoff == "permutation", None
    # Below this, CMI differences are rounding (float32 distances), not information.
    tol = max(_NEGLIGIBLE * curve[0], _NEGLIGIBLE_NATS)
    gen = generator or torch.Generator(device="cpu").manual_seed(cfg.seed)
    for t in range(1, c + 1):
        h = joint.candidates(d_s, remaining)
        gain = h_y + h[:, 0] - h[:, 1]           # I(Y; Z, S u {j})
        best = int(torch.argmax(gain))           # first maximum: ties go to the lowest channel index
        j = remaining.pop(best)
        d_prev, d_s = d_s, d_s + d2[j]
        order.append(j)
        objective.append(float(gain[best]))
        h_s = joint.of(d_s)
        cmi = float(cmi_of(h_s, h_all)) if remaining else 0.0
        curve.append(cmi)
        if testing and remaining:
            p = _permutation_p(joint, j, d_prev, d_all - d2[j], cmi, cmi_of, cfg, gen, tol)
            p_values.append(p)
            if p >= cfg.eta:
                keep, testing = t - 1, False
    if cfg.cutoff == "permutation" and keep is None:
        keep = c  # every step was significant (or the layer ran out of channels)
    keep, scree = _cut(curve, cfg.cutoff, keep)
    return LayerCmi(name, order, curve, objective, max(1, min(c, keep)), cfg.cutoff, sigma, [], p_values, scree)


def _permutation_p(joint: _Joint, j: int, d_prev: torch.Tensor, d_rest: torch.Tensor, observed: float, cmi_of,
                   cfg: CmiConfig, gen: torch.Generator, tol: float) -> float:
    """Share of row permutations of the chosen channel whose CMI is <= the observed CMI.

    A permuted channel keeps its marginal but loses its relation to Y, so an informative channel leaves
    less CMI than its permutations; differences below `tol` (a negligible share of the layer's CMI)
    count as no difference, so a channel that adds nothing is not significant. Stops early once
    p >= eta is certain (the decision is the one all P permutations give; the p-value is then a lower bound).
    """
    n = joint.n
    total, at_most, done = cfg.permutations, 0, 0
    limit = math.ceil(cfg.eta * total)
    bases = torch.stack([d_prev, d_rest])
    while done < total:
        b = min(25, total - done)
        perms = torch.stack([torch.randperm(n, generator=gen) for _ in range(b)]).to(bases.device)
        h = joint.permuted(bases, j, perms)      # (2, P, 2): with S_prev and with the rest
        cmi = cmi_of(h[0], h[1])
        at_most += int((cmi <= observed + tol).sum())
        done += b
        if at_most >= limit:
            break
    return at_most / done if at_most >= limit else at_most / total


def _cut(curve: list[float], method: str, keep: int | None) -> tuple[int, list[int]]:
    c = len(curve) - 1
    scree = _scree(curve)
    if method == "permutation":
        return keep, scree
    if method == "scree":
        return (scree[0] if scree else c), scree
    if method == "xmeans":
        return xmeans_cut(np.arange(c + 1, dtype=float), np.asarray(curve, dtype=float)), scree
    return c, scree


def _scree(curve: list[float]) -> list[int]:
    """Cut points at the three largest ratios of successive drops r_t = (cmi_{t-1}-cmi_t)/(cmi_t-cmi_{t+1})."""
    v = np.asarray(curve, dtype=float)
    if len(v) < 3:
        return []
    drops = v[:-1] - v[1:]                     # drops[t-1] = cmi_{t-1} - cmi_t
    eps = _FLAT * max(abs(v[0]), 1e-12)  # a flat tail must not turn rounding-size drops into huge ratios
    ratios = [(drops[t - 1] / max(drops[t], eps), t) for t in range(1, len(v) - 1) if drops[t - 1] > eps]
    ratios.sort(key=lambda rt: (-rt[0], rt[1]))
    return [t for _, t in ratios[:3]]


# -- all layers: conditioning and order -------------------------------------------------------------

def rank_layers(layers: list[str], distances: Callable[[str], tuple[torch.Tensor, float]], label_gram: torch.Tensor,
                cfg: CmiConfig, progress: Callable[[str], None] | None = None) -> dict[str, LayerCmi]:
    """Greedy CMI for every layer, with the configured conditioning and layer order.

    `layers` is in execution order; `distances(name)` gives (d2, sigma) for a layer (it may compute them
    on demand). Conditioning on other layers uses the Gram of their kept channels.
    """
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    done: dict[str, LayerCmi] = {}
    kept_grams: dict[str, torch.Tensor] = {}

    def run(name: str, cond: list[str]) -> LayerCmi:
        d2, sigma = distances(name)
        kz = None
        for other in cond:
            kz = kept_grams[other] if kz is None else kz * kept_grams[other]
        res = greedy_cmi(d2, sigma, label_gram, cfg, kz, name, gen)
        res.conditioned_on = list(cond)
        if cfg.conditioning != "per-layer" or cfg.order == "bidirectional":
            kept_grams[name] = gram_from_sq_dist(d2[res.order[:res.keep]].sum(0), sigma)
        if progress:
            progress(name)
        return res

    def sweep(seq: list[str], first_cond: list[str]) -> None:
        history = list(first_cond)
        for name in seq:
            cond = [] if cfg.conditioning == "per-layer" else (history[-1:] if cfg.conditioning == "compact" else history)
            done[name] = run(name, cond)
            history.append(name)

    if cfg.order == "forward" or cfg.conditioning == "per-layer":
        sweep(list(layers), [])
    elif cfg.order == "backward":
        sweep(list(reversed(layers)), [])
    else:  # bi-directional: start where a layer can lose the largest fraction, then go both ways
        first = {name: run(name, []) for name in layers}
        start = min(layers, key=lambda nm: (first[nm].keep / first[nm].channels, layers.index(nm)))
        i = layers.index(start)
        done[start] = first[start]
        sweep(layers[i + 1:], [start])
        sweep(list(reversed(layers[:i])), [start])
    return {name: done[name] for name in layers}
