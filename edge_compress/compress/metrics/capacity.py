"""Information capacity and information independence of a layer's channels.

Capacity after Tang et al. (arXiv 2303.03645); independence in the nuclear-norm form of CHIP (Sui et al.,
NeurIPS 2021). See ../shared/reference/ALGORITHMS.md section 5. Pure tensor functions: they run on the
device of their input, compute in float64, and return one float64 score per channel (higher = keep).
Features are (N, C, *spatial) activations; weights are (C, ...) with the output channels first.
"""
from __future__ import annotations

import math

import torch

CAPACITY_METHODS = ("gaussian", "histogram")
# Floor on a channel's variance (and on a histogram bin width): a constant channel then gets a very low
# but finite capacity, so it ranks last without turning the scores into -inf or NaN.
VAR_FLOOR = 1e-12
# Fixed bin count of the histogram estimate: fine enough for the N*H*W values of a calibration batch
# (tens of thousands and more), coarse enough that few bins are empty by chance.
HIST_BINS = 64
# float64 elements materialised at once (about 128 MB); bounds memory on large layers and batches.
CHUNK_ELEMENTS = 1 << 24


# -- input checks ---------------------------------------------------------------------------------

def _check_finite(t: torch.Tensor, what: str, hint: str) -> None:
    if not bool(torch.isfinite(t).all()):
        nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
        raise ValueError(f"{what} contain {nan} NaN and {inf} inf values: {hint}")


def _check_features(features: torch.Tensor) -> None:
    if features.dim() < 2:
        raise ValueError(f"features must be (N, C, *spatial), got shape {tuple(features.shape)}")
    if features.shape[0] < 2:
        raise ValueError(f"need at least 2 calibration samples, got {features.shape[0]}")
    _check_finite(features, "features", "check the calibration data")


def _check_weight(weight: torch.Tensor) -> None:
    if weight.dim() < 1 or weight.shape[0] < 1:
        raise ValueError(f"weight must be (C, ...) with C >= 1, got shape {tuple(weight.shape)}")
    _check_finite(weight, "weights", "check the model file and the calibration data it was fitted on")


# -- capacity -------------------------------------------------------------------------------------

def _gaussian_entropy(rows: torch.Tensor) -> torch.Tensor:
    """0.5 * log(2 pi e var) of each row (the entropy of a Gaussian of the row's variance)."""
    var = rows.var(dim=1, unbiased=False).clamp_min(VAR_FLOOR)
    return 0.5 * torch.log(2.0 * math.pi * math.e * var)


def _histogram_entropy(rows: torch.Tensor) -> torch.Tensor:
    """Differential entropy of each row from HIST_BINS equal bins over the row's own range.

    The discrete entropy of the bin frequencies plus log(bin width), so the scores are in the same units
    as the Gaussian estimate and shrink with the channel's scale.
    """
    lo, hi = rows.min(dim=1).values, rows.max(dim=1).values
    width = ((hi - lo) / HIST_BINS).clamp_min(VAR_FLOOR)
    idx = ((rows - lo[:, None]) / width[:, None]).floor().long().clamp_(0, HIST_BINS - 1)
    counts = torch.zeros(rows.shape[0], HIST_BINS, dtype=torch.float64, device=rows.device)
    counts.scatter_add_(1, idx, torch.ones_like(rows))
    p = counts / rows.shape[1]
    return -torch.xlogy(p, p).sum(1) + torch.log(width)


def _per_channel(features: torch.Tensor, fn) -> torch.Tensor:
    """fn over each channel's values (all samples and positions) as float64 rows, a chunk of channels at a time."""
    n, c = features.shape[:2]
    per = max(1, features[0, 0].numel() * n)
    step = max(1, CHUNK_ELEMENTS // per)
    out = [fn(features[:, i:i + step].transpose(0, 1).reshape(min(step, c - i), -1).to(torch.float64))
           for i in range(0, c, step)]
    return torch.cat(out)


def capacity_from_activations(features: torch.Tensor, method: str = "gaussian") -> torch.Tensor:
    """Information capacity of each channel: the entropy (nats) of its activations over samples and positions.

    'gaussian': 0.5 * log(2 pi e var). 'histogram': HIST_BINS-bin differential entropy estimate.
    Variances (and bin widths) are floored at VAR_FLOOR, so constant channels score lowest and finite.
    A one-channel layer gives a single score. features (N, C, *spatial), N >= 2 -> (C,) float64.
    """
    if method not in CAPACITY_METHODS:
        raise ValueError(f"unknown capacity method {method!r}; choose one of {', '.join(CAPACITY_METHODS)}")
    _check_features(features)
    fn = _gaussian_entropy if method == "gaussian" else _histogram_entropy
    return _per_channel(features, fn)


def capacity_from_weights(weight: torch.Tensor) -> torch.Tensor:
    """Data-free capacity: the Gaussian entropy 0.5 * log(2 pi e var) of each output filter's weights.

    Our reading of the paper's feature-guided, data-free capacity: its exact formula was not read; the
    paper reports that a filter's entropy tracks its feature map's, and this is the simplest such entropy.
    weight (C, ...) -> (C,) float64; filters with one weight (or constant ones) get the VAR_FLOOR score.
    """
    _check_weight(weight)
    return _gaussian_entropy(weight.reshape(weight.shape[0], -1).to(torch.float64))


# -- independence ---------------------------------------------------------------------------------

def _nuclear_from_gram(g: torch.Tensor) -> torch.Tensor:
    """Nuclear norms of matrices M from Grams M M^T or M^T M (..., k, k): sum of sqrt of the eigenvalues.

    Eigenvalues below k * eps * lambda_max are rounding noise around a zero singular value (duplicated or
    dead channels make the Gram singular); their square roots would add about 1e-8 * ||M|| each, so they
    count as zero.
    """
    lam = torch.linalg.eigvalsh(g)
    tol = g.shape[-1] * torch.finfo(torch.float64).eps * lam[..., -1:].clamp_min(0.0)
    return torch.where(lam > tol, lam, torch.zeros_like(lam)).sqrt().sum(-1)


def _loo_grams(m: torch.Tensor, c0: int, c1: int) -> torch.Tensor:
    """Grams of m (n, C, P) with row c zeroed, for c in [c0, c1): (n, c1 - c0, k, k), k = min(C - 1, P).

    With P < C - 1 the P x P Gram M^T M loses the rank-one term of row c; otherwise the C x C Gram M M^T
    loses row and column c. Both have the nonzero spectrum of M with row c zeroed; the smaller is cheaper.
    """
    c, p = m.shape[-2:]
    if p < c - 1:
        rows = m[:, c0:c1]
        return (m.transpose(-1, -2) @ m).unsqueeze(1) - rows.unsqueeze(-1) * rows.unsqueeze(-2)
    keep = torch.arange(c, device=m.device).expand(c1 - c0, c)
    keep = keep[keep != torch.arange(c0, c1, device=m.device)[:, None]].reshape(c1 - c0, c - 1)
    g = m @ m.transpose(-1, -2)
    return g[:, keep[:, :, None], keep[:, None, :]]


def _independence(m: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ||M||_* - ||M with row c zeroed||_*: m (N, C, P) -> (C,).

    Chunked over samples, and over channels when one sample's leave-one-out Grams exceed CHUNK_ELEMENTS.
    """
    n, c, p = m.shape
    k = max(1, min(c - 1, p))
    ns = max(1, CHUNK_ELEMENTS // max(c * k * k, c * p))  # samples whose leave-one-out Grams fit at once
    nc = c if ns > 1 else max(1, CHUNK_ELEMENTS // (k * k))
    total = torch.zeros(c, dtype=torch.float64, device=m.device)
    for s in range(0, n, ns):
        ms = m[s:s + ns].to(torch.float64)
        full = _nuclear_from_gram(ms @ ms.transpose(-1, -2) if c <= p else ms.transpose(-1, -2) @ ms)
        if c == 1:  # zeroing the only row leaves nothing: the score is the row's own norm
            total += full.sum()
            continue
        for i in range(0, c, nc):
            total[i:i + nc] += (full[:, None] - _nuclear_from_gram(_loo_grams(ms, i, min(c, i + nc)))).sum(0)
    return total / n


def independence_from_activations(features: torch.Tensor, max_samples: int | None = None) -> torch.Tensor:
    """CHIP information independence of each channel: (N, C, *spatial) -> (C,) float64.

    Per sample the layer's activations form a C x (H*W) matrix M; II_c is the mean over samples of
    ||M||_* - ||M with row c zeroed||_*, a channel's share of the layer's nuclear norm (duplicated channels
    score low). Uses the first `max_samples` samples when given. Computed from batched eigvalsh of Grams,
    O(N C min(C, HW)^3). A one-channel layer scores the mean norm of its maps (nothing else to overlap).
    """
    _check_features(features)
    if max_samples is not None:
        if max_samples < 2:
            raise ValueError(f"max_samples must be >= 2, got {max_samples}")
        features = features[:max_samples]
    n, c = features.shape[:2]
    return _independence(features.reshape(n, c, -1))


def independence_from_weights(weight: torch.Tensor) -> torch.Tensor:
    """Data-free independence: the CHIP score on the single flattened (C, fan_in) weight matrix -> (C,) float64."""
    _check_weight(weight)
    return _independence(weight.reshape(1, weight.shape[0], -1))


# -- combined score -------------------------------------------------------------------------------

def _minmax(v: torch.Tensor) -> torch.Tensor:
    v = v.to(torch.float64)
    span = v.max() - v.min()
    return (v - v.min()) / span if span > 0 else torch.zeros_like(v)


def capacity_independence(capacity: torch.Tensor, independence: torch.Tensor, balance: float = 1.0) -> torch.Tensor:
    """Per-layer score: min-max normalised capacity + balance * min-max normalised independence.

    Each vector is scaled to [0, 1] within the layer; a constant vector (or a one-channel layer) scales to zeros.
    """
    if capacity.shape != independence.shape or capacity.dim() != 1:
        raise ValueError(f"capacity {tuple(capacity.shape)} and independence {tuple(independence.shape)} "
                         "must be vectors of the same length (one score per channel)")
    return _minmax(capacity) + balance * _minmax(independence)
