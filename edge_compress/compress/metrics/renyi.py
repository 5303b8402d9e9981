"""Matrix-based Renyi alpha-entropy and the information quantities built on it.

Sanchez Giraldo, Rao & Principe (2015); the multivariate (Hadamard product) form of Yu et al. (2019).
Pure functions on tensors: they run wherever the tensors are (CPU or CUDA) and accept leading batch
dimensions, so many candidate sets are evaluated in one call. Entropies are in nats (natural log).

A Gram matrix here is any positive semi-definite (..., N, N) matrix with a unit diagonal; `entropy`
normalises it by its trace. Gaussian Grams that share one kernel width multiply into one Gaussian of
summed squared distances, which is what makes the greedy searches of this package cheap: see
`gram_from_sq_dist` and `entropy2_from_sq_dist`.
"""
from __future__ import annotations

import math

import torch

WIDTH_RULES = ("paper", "median", "standardized")
LABEL_KERNELS = ("delta", "onehot")


# -- distances and kernel widths ------------------------------------------------------------------

def sq_distances(x: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between the rows of x: (..., N, d) -> (..., N, N), exact zeros on the diagonal.

    Computed in float64 from the Gram form, then clipped at 0 (rounding can make tiny distances negative).
    """
    x = x.to(torch.float64)
    sq = (x * x).sum(-1)
    d = sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2.0 * (x @ x.transpose(-1, -2))
    d = d.clamp_min_(0.0)
    d.diagonal(dim1=-2, dim2=-1).zero_()
    return d


def channel_sq_distances(features: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One (N, N) squared-distance matrix per channel: (N, C, *spatial) -> (C, N, N).

    Each channel's map, flattened, is one point per sample. Stored in `dtype` (float32 by default: C*N^2
    values per layer; the spectra that need float64 are computed from these in float64).
    """
    n, c = features.shape[:2]
    f = features.reshape(n, c, -1).transpose(0, 1)  # (C, N, d)
    step = max(1, (1 << 24) // max(n * n, 1))       # channels per float64 chunk (about 128 MB)
    return torch.cat([sq_distances(f[i:i + step]).to(dtype) for i in range(0, c, step)])


def paper_sigma(n: int, dim: int) -> float:
    """The CMI paper's reference-code rule: sigma = 5 * N^(-1/(4+d)), d the dimension of one sample."""
    return 5.0 * n ** (-1.0 / (4.0 + dim))


def median_sigma(d2: torch.Tensor) -> float:
    """Scale-aware width: the median of the off-diagonal pairwise distances (median heuristic).

    `d2` holds squared distances, (N, N) or a stack (..., N, N) whose median is taken over all of it.
    Falls back to 1.0 when every distance is zero (a constant variable: its Gram is all ones whatever
    the width, and its entropy is 0).
    """
    n = d2.shape[-1]
    off = ~torch.eye(n, dtype=torch.bool, device=d2.device)
    vals = d2[..., off].reshape(-1).to(torch.float64)
    if vals.numel() > 4_000_000:  # the median of a large sample is enough and keeps memory flat
        g = torch.Generator(device="cpu").manual_seed(0)
        vals = vals[torch.randint(vals.numel(), (4_000_000,), generator=g).to(vals.device)]
    med = float(vals.median())
    return math.sqrt(med) if med > 0 else 1.0


def gram_from_sq_dist(d2: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian Gram matrix exp(-d2 / (2 sigma^2)); the product of Grams of the same width is the Gram of summed d2."""
    return torch.exp(d2.to(torch.float64) / (-2.0 * sigma * sigma))


def gaussian_gram(x: torch.Tensor, sigma: float | None = None, rule: str = "median") -> torch.Tensor:
    """Gram matrix of samples x (N, ...) with a Gaussian kernel; sigma from `rule` when not given."""
    n = x.shape[0]
    flat = x.reshape(n, -1).to(torch.float64)
    if rule == "standardized":
        flat = standardize(flat)
    d2 = sq_distances(flat)
    if sigma is None:
        sigma = width_for(d2, rule, n, flat.shape[1])
    return gram_from_sq_dist(d2, sigma)


def width_for(d2: torch.Tensor, rule: str, n: int, dim: int) -> float:
    """Kernel width for squared distances d2 of N samples of dimension `dim` under `rule`.

    'paper' and 'standardized' use 5 * N^(-1/(4+d)); 'standardized' expects d2 of z-scored features.
    'median' is the median heuristic (scale-aware).
    """
    if rule in ("paper", "standardized"):
        return paper_sigma(n, dim)
    if rule == "median":
        return median_sigma(d2)
    raise ValueError(f"unknown kernel width rule {rule!r}; choose one of {', '.join(WIDTH_RULES)}")


def standardize(x: torch.Tensor) -> torch.Tensor:
    """z-score over the samples and positions of a variable (one mean and std for the whole variable)."""
    std = x.std()
    return (x - x.mean()) / (std if std > 0 else 1.0)


def label_gram(y: torch.Tensor, kind: str = "delta", num_classes: int | None = None,
               sigma: float | None = None) -> torch.Tensor:
    """Gram matrix of discrete labels (N,).

    'delta': K_ij = [y_i == y_j], exact for discrete labels (H_alpha(Y) is the Renyi entropy of the class
    frequencies). 'onehot': one-hot vectors through a Gaussian kernel, as in the CMI paper's code
    (sigma = 5 * N^(-1/(4+K)) with d = K classes unless given).
    """
    y = y.reshape(-1)
    if kind == "delta":
        return (y.unsqueeze(0) == y.unsqueeze(1)).to(torch.float64)
    if kind == "onehot":
        k = int(num_classes if num_classes is not None else int(y.max()) + 1)
        onehot = torch.nn.functional.one_hot(y.long(), k).to(torch.float64)
        s = sigma if sigma is not None else paper_sigma(y.numel(), k)
        return gram_from_sq_dist(sq_distances(onehot), s)
    raise ValueError(f"unknown label kernel {kind!r}; choose one of {', '.join(LABEL_KERNELS)}")


# -- entropies ------------------------------------------------------------------------------------

def _check_alpha(alpha: float) -> None:
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0 (got {alpha})")


def entropy(gram: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """Matrix-based Renyi alpha-entropy of (..., N, N) Gram matrices, normalised by their trace.

    alpha = 2 uses the Frobenius identity sum(lambda^2) = ||A||_F^2 (O(N^2), no eigendecomposition);
    other alphas use a float64 symmetric eigensolver with tiny negative eigenvalues clipped to 0;
    alpha = 1 is the von Neumann (Shannon) limit -sum(lambda log lambda).
    """
    _check_alpha(alpha)
    g = gram.to(torch.float64)
    trace = g.diagonal(dim1=-2, dim2=-1).sum(-1)
    if not bool((trace > 0).all()):
        raise ValueError("a Gram matrix with zero trace has no entropy; Grams must have a positive (unit) diagonal")
    a = g / trace[..., None, None]
    if alpha == 2:
        return -torch.log((a * a).sum((-2, -1)))
    lam = torch.linalg.eigvalsh(a)
    # Rounding leaves the zero eigenvalues at about +-1e-16; raised to alpha < 1 they would add bias.
    floor = g.shape[-1] * torch.finfo(torch.float64).eps * lam.amax(-1, keepdim=True)
    lam = torch.where(lam > floor, lam, torch.zeros_like(lam))
    return spectrum_entropy(lam, alpha)


def spectrum_entropy(lam: torch.Tensor, alpha: float) -> torch.Tensor:
    """Renyi alpha-entropy of (..., N) spectra that sum to 1."""
    if alpha == 1:
        return -(torch.xlogy(lam, lam)).sum(-1)
    return torch.log((lam ** alpha).sum(-1)) / (1.0 - alpha)


def entropy2_from_sq_dist(d2: torch.Tensor, sigma: float, weight_sq: torch.Tensor | None = None) -> torch.Tensor:
    """S_2 of the Gaussian Gram of squared distances d2 (..., N, N), optionally joint with other variables.

    The fast path of the greedy searches: every Gram involved has a unit diagonal, so the trace is N,
    and the square of a Gaussian Gram is the Gaussian of twice the exponent:
    S_2 = -log(sum_ij W_ij exp(-d2_ij / sigma^2) / N^2), one exp per entry. `weight_sq` is W, the
    element-wise SQUARE of the (N, N) Hadamard product of the other variables' Grams (a label Gram, a
    conditioning Gram); it must have a unit diagonal. Computed in float64.
    """
    n = d2.shape[-1]
    k2 = torch.exp(d2.to(torch.float64) / (-sigma * sigma))
    if weight_sq is not None:
        k2 = k2 * weight_sq.to(torch.float64)
    return -torch.log(k2.sum((-2, -1)) / (n * n))


def joint_entropy(*grams: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """S_alpha of several variables: the entropy of the Hadamard product of their Gram matrices."""
    if not grams:
        raise ValueError("joint_entropy needs at least one Gram matrix")
    prod = grams[0].to(torch.float64)
    for g in grams[1:]:
        prod = prod * g.to(torch.float64)
    return entropy(prod, alpha)


def mutual_information(kx: torch.Tensor, ky: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """I(X; Y) = S(X) + S(Y) - S(X, Y)."""
    return entropy(kx, alpha) + entropy(ky, alpha) - joint_entropy(kx, ky, alpha=alpha)


def conditional_mutual_information(kx: torch.Tensor, ky: torch.Tensor, kz: torch.Tensor,
                                   alpha: float = 2.0) -> torch.Tensor:
    """I(X; Y | Z) = S(X, Z) + S(Y, Z) - S(X, Y, Z) - S(Z)."""
    return (joint_entropy(kx, kz, alpha=alpha) + joint_entropy(ky, kz, alpha=alpha)
            - joint_entropy(kx, ky, kz, alpha=alpha) - entropy(kz, alpha))
