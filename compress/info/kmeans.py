"""x-means cutoff on a CMI curve: k-means on the points (t, cmi_t) with k chosen by BIC.

Both coordinates are scaled to [0, 1] so the index and the information count alike. k-means is
initialised deterministically (points spread evenly along t), so the cut does not depend on a seed.
BIC follows Pelleg & Moore (2000) for spherical Gaussian clusters.
"""
from __future__ import annotations

import math

import numpy as np


def _kmeans(x: np.ndarray, k: int, iters: int = 100) -> np.ndarray:
    centers = x[np.linspace(0, len(x) - 1, k).round().astype(int)].copy()
    labels = np.zeros(len(x), dtype=int)
    for _ in range(iters):
        dist = ((x[:, None, :] - centers[None]) ** 2).sum(-1)
        new = dist.argmin(1)
        if (new == labels).all() and _ > 0:
            break
        labels = new
        for j in range(k):
            if (labels == j).any():
                centers[j] = x[labels == j].mean(0)
    return labels


def _bic(x: np.ndarray, labels: np.ndarray, k: int) -> float:
    n, d = x.shape
    sizes = np.bincount(labels, minlength=k)
    sse = sum(((x[labels == j] - x[labels == j].mean(0)) ** 2).sum() for j in range(k) if sizes[j])
    var = max(sse / max(n - k, 1) / d, 1e-12)
    loglik = 0.0
    for nj in sizes[sizes > 0]:
        loglik += nj * math.log(nj / n) - nj * d / 2 * math.log(2 * math.pi * var) - (nj - 1) * d / 2
    params = (k - 1) + k * d + 1
    return loglik - params / 2 * math.log(n)


def xmeans_labels(t: np.ndarray, y: np.ndarray, k_max: int = 6) -> np.ndarray:
    """Cluster labels of the points (t, y), numbered in order of first appearance along t."""
    pts = np.stack([t, y], 1).astype(float)
    span = pts.max(0) - pts.min(0)
    pts = (pts - pts.min(0)) / np.where(span > 0, span, 1.0)
    best, best_bic = np.zeros(len(pts), dtype=int), -math.inf
    for k in range(1, min(k_max, len(pts) - 1) + 1):
        labels = _kmeans(pts, k)
        bic = _bic(pts, labels, k)
        if bic > best_bic + 1e-9:
            best, best_bic = labels, bic
    first_seen: dict[int, int] = {}
    for lab in best:
        first_seen.setdefault(int(lab), len(first_seen))
    return np.array([first_seen[int(lab)] for lab in best])


def xmeans_cut(t: np.ndarray, y: np.ndarray, k_max: int = 6) -> int:
    """The first index of the second cluster along t (len(t) - 1, i.e. keep all, when one cluster wins)."""
    labels = xmeans_labels(t, y, k_max)
    second = np.nonzero(labels != labels[0])[0]
    return int(t[second[0]]) if len(second) else int(t[-1])
