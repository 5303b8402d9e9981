"""Mutual Information Preserving Pruning (MIPP) for one layer, with the matrix-based Renyi MI.

Westphal, Hailes & Musolesi, arXiv 2411.00147 (../shared/reference/ALGORITHMS.md section 4). Layer l
keeps a set of channels whose MI with the already-pruned layer l+1 (the *target*) is not significantly
lower than the MI of the whole layer: start with every channel kept, visit channels from the least to
the most informative about the target, and remove a channel when the kept set without it still carries
the layer's information.

Estimator. The paper estimates MI with small MLPs trained to predict the target (one fit per unit).
This module replaces that estimator with the matrix-based Renyi MI of `renyi` (same principle: keep
I(X'_l; X'_{l+1}) = I(X_l; X'_{l+1}); one estimator for the whole product). The Gram of a channel set S
is the Gaussian of the summed per-channel squared distances, so a removal test is one subtraction from
a running sum and one entropy, never a Gram rebuilt from features. alpha = 2 needs no eigenvalues
(O(N^2) per test); other alphas use a float64 `eigvalsh` (O(N^3) per test).

The "significantly lower" decision is a bootstrap test of the reference MI:
    mi_full   = I(X_l; T) with every channel, on the N calibration samples;
    boot_b    = I(X_l; T) on a resample of the N samples drawn with replacement (b = 1..n_boot; both
                Grams indexed with the same resample; seeded CPU generator, so every device draws the same);
    se        = the sample standard deviation of the boot_b (n_boot - 1 degrees of freedom);
    threshold = mi_full - z * se,  z = NormalDist().inv_cdf(confidence) (1.645 for 0.95);
    channel i is removed  <=>  I(kept \\ {i}; T) >= threshold  (and the layer keeps more than min_keep).
This is a one-sided test whose null hypothesis is "removing i loses no information"; a drop counts as a
loss only when it exceeds the estimator's sampling noise at level `confidence`. Hence a higher confidence
demands stronger evidence of a loss before a channel is kept: it widens the tolerance and prunes MORE
aggressively; confidence = 0.5 (z = 0) removes only channels whose removal does not lower the MI at all.
(The opposite reading, "be x-confident that nothing is lost", would require the MI to *rise* by z * se
before any removal and prunes almost nothing, so it cannot be the paper's aggressiveness dial.) The
threshold is fixed against the full layer, so small losses cannot accumulate below it.

Kernel width. Every set is measured at the caller's one width, so each channel weighs in by its share
of the summed distances: an exact copy doubles its channel's weight, and the estimator counts it as
information unless the width is small against the distances that carry the target's information and
large against the rest (then the Grams are near 0/1 class partitions and a copy, or a channel of small
noise, changes nothing). At the median width of the whole layer, copies are kept. alpha near 1 also
credits pure-noise channels with a little MI (a small-sample bias) that alpha = 2 mostly does not.

A single-channel layer keeps its channel (a layer is never emptied); so does any layer at `min_keep`.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch

from . import renyi

# Entries of one float64 batch of (N, N) matrices: bounds memory at 128 MB whatever C, N or n_boot.
_BATCH_ENTRIES = 1 << 24
_MIN_SAMPLES = 4


@dataclass
class MippResult:
    """Outcome of `mipp_select` for one layer; MI values in nats."""

    keep: list[int]
    removed: list[int]
    visit_order: list[int]
    unit_mi: list[float]
    mi_full: float
    threshold: float
    scores: torch.Tensor
    # I(kept \ {c}; target) seen when c was visited, aligned with visit_order: why each channel went or stayed.
    tested_mi: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"keep": list(self.keep), "removed": list(self.removed), "visit_order": list(self.visit_order),
                "unit_mi": list(self.unit_mi), "mi_full": self.mi_full, "threshold": self.threshold,
                "scores": self.scores.tolist(), "tested_mi": list(self.tested_mi)}


@dataclass(frozen=True)
class _Mi:
    """I(S; T) against one target at one kernel width, for channel sets S given by summed squared distances."""

    gram: torch.Tensor
    gram_sq: torch.Tensor
    target_entropy: torch.Tensor
    sigma: float
    alpha: float

    @classmethod
    def against(cls, target_gram: torch.Tensor, sigma: float, alpha: float) -> "_Mi":
        return cls(target_gram, target_gram * target_gram, renyi.entropy(target_gram, alpha), sigma, alpha)

    def __call__(self, d2_sum: torch.Tensor) -> torch.Tensor:
        if self.alpha == 2:
            h_s = renyi.entropy2_from_sq_dist(d2_sum, self.sigma)
            h_st = renyi.entropy2_from_sq_dist(d2_sum, self.sigma, weight_sq=self.gram_sq)
        else:
            k = renyi.gram_from_sq_dist(d2_sum, self.sigma)
            h_s = renyi.entropy(k, self.alpha)
            h_st = renyi.entropy(k * self.gram, self.alpha)
        return h_s + self.target_entropy - h_st


def mipp_select(layer_d2: torch.Tensor, target_gram: torch.Tensor, sigma: float, *, alpha: float = 2.0,
                confidence: float = 0.95, n_boot: int = 20, seed: int = 0, min_keep: int = 1) -> MippResult:
    """MIPP channel selection for one layer.

    layer_d2: (C, N, N) per-channel squared distances (`renyi.channel_sq_distances`), all sharing `sigma`.
    target_gram: (N, N) unit-diagonal Gram of the already-pruned next layer. See the module docstring for
    the decision rule; `confidence` in (0, 1), higher = more aggressive. Runs on layer_d2's device.
    """
    _check_args(layer_d2, target_gram, sigma, alpha, confidence, n_boot, min_keep)
    mi = _Mi.against(target_gram.to(layer_d2.device, torch.float64), sigma, alpha)
    unit_mi = _unit_mi(layer_d2, mi)
    total = layer_d2.sum(0, dtype=torch.float64)
    mi_full = float(mi(total))
    z = statistics.NormalDist().inv_cdf(confidence)
    threshold = mi_full - z * _bootstrap_se(total, mi, n_boot, seed)
    visit = _visit_order(unit_mi)
    keep, removed, tested = _prune(layer_d2, total, visit, mi, threshold, min_keep)
    return MippResult(keep=keep, removed=removed, visit_order=visit, unit_mi=unit_mi, mi_full=mi_full,
                      threshold=threshold, scores=_scores(visit, removed, layer_d2.device), tested_mi=tested)


# -- steps ----------------------------------------------------------------------------------------

def _unit_mi(layer_d2: torch.Tensor, mi: _Mi) -> list[float]:
    c, n = layer_d2.shape[:2]
    step = _batch_size(n)
    return torch.cat([mi(layer_d2[a:a + step].to(torch.float64)) for a in range(0, c, step)]).tolist()


def _bootstrap_se(total: torch.Tensor, mi: _Mi, n_boot: int, seed: int) -> float:
    n = total.shape[-1]
    # A CPU generator draws the same resamples on every device, so CPU and GPU runs agree.
    gen = torch.Generator(device="cpu").manual_seed(seed)
    idx = torch.randint(n, (n_boot, n), generator=gen).to(total.device)
    step = _batch_size(n)
    values = [_resampled_mi(total, mi, idx[a:a + step]) for a in range(0, n_boot, step)]
    return float(torch.cat(values).std())


def _resampled_mi(total: torch.Tensor, mi: _Mi, idx: torch.Tensor) -> torch.Tensor:
    rows, cols = idx[:, :, None], idx[:, None, :]
    return _Mi.against(mi.gram[rows, cols], mi.sigma, mi.alpha)(total[rows, cols])


def _visit_order(unit_mi: list[float]) -> list[int]:
    # Higher index first among equal MI: of a channel and its exact copy, the later one is tested first.
    return sorted(range(len(unit_mi)), key=lambda c: (unit_mi[c], -c))


def _prune(layer_d2: torch.Tensor, total: torch.Tensor, visit: list[int], mi: _Mi, threshold: float,
           min_keep: int) -> tuple[list[int], list[int], list[float]]:
    kept, removed, tested = set(visit), [], []
    for c in visit:
        d_c = layer_d2[c].to(torch.float64)
        # Rounding can leave tiny negative distances after subtraction; a distance is never below 0.
        tested.append(float(mi((total - d_c).clamp_min_(0.0))))
        if tested[-1] >= threshold and len(kept) > min_keep:
            kept.discard(c)
            removed.append(c)
            total = total - d_c
    return sorted(kept), removed, tested


def _scores(visit: list[int], removed: list[int], device: torch.device) -> torch.Tensor:
    """Ranks 0..C-1: removed channels by removal order, then kept ones by visit order (unit MI)."""
    gone = set(removed)
    ranked = removed + [c for c in visit if c not in gone]
    scores = torch.empty(len(visit), dtype=torch.float64, device=device)
    scores[torch.tensor(ranked, device=device)] = torch.arange(len(visit), dtype=torch.float64, device=device)
    return scores


def _batch_size(n: int) -> int:
    return max(1, _BATCH_ENTRIES // (n * n))


# -- input checks ---------------------------------------------------------------------------------

def _check_args(layer_d2: torch.Tensor, target_gram: torch.Tensor, sigma: float, alpha: float,
                confidence: float, n_boot: int, min_keep: int) -> None:
    _check_shapes(layer_d2, target_gram)
    _check_finite(layer_d2, "layer_d2")
    _check_finite(target_gram, "target_gram")
    # The alpha = 2 path takes the joint Gram's trace to be N.
    if float((target_gram.diagonal().to(torch.float64) - 1.0).abs().max()) > 1e-6:
        raise ValueError("target_gram must have a unit diagonal (a Gram matrix of a normalised kernel)")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 (got {sigma})")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0 (got {alpha})")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1) (got {confidence})")
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2 to estimate the MI's spread (got {n_boot})")
    if min_keep < 1:
        raise ValueError(f"min_keep must be >= 1: a layer is never emptied (got {min_keep})")


def _check_shapes(layer_d2: torch.Tensor, target_gram: torch.Tensor) -> None:
    if layer_d2.dim() != 3 or layer_d2.shape[1] != layer_d2.shape[2] or layer_d2.shape[0] == 0:
        raise ValueError(f"layer_d2 must be (C, N, N) with C >= 1 (got {tuple(layer_d2.shape)})")
    n = layer_d2.shape[-1]
    if tuple(target_gram.shape) != (n, n):
        raise ValueError(f"target_gram must be ({n}, {n}) like layer_d2's samples (got {tuple(target_gram.shape)})")
    if n < _MIN_SAMPLES:
        raise ValueError(f"need at least {_MIN_SAMPLES} calibration samples (got N = {n})")


def _check_finite(t: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values; check the calibration activations")
