"""x-means cutoff on a CMI curve: k-means on the curve's points with k chosen by BIC.

The paper clusters the points (t, cmi_t) and cuts at the first index of the second cluster. With the
index as a coordinate, evenly spaced t dominates: BIC prefers clusters cut along t and the cut lands
inside the first plateau. So the clustering here is on the CMI values, the clusters are read along
t, and the cut is where the last cluster (the flat tail of channels that add nothing) begins; with two
clusters this is exactly the first index of the second one. k-means is initialised
deterministically, so the cut does not depend on a seed; BIC follows Pelleg & Moore (2000).
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
    """Cluster labels of the values y (clustered in 1-D), in order of t, numbered by first appearance."""
    pts = np.asarray(y, dtype=float)[:, None][np.argsort(t, kind="stable")]
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
    """The t where the last cluster (the tail) begins; the last t (keep all) when one cluster wins."""
    order = np.argsort(t, kind="stable")
    ts, labels = np.asarray(t)[order], xmeans_labels(t, y, k_max)
    if (labels == labels[0]).all():
        return int(ts[-1])
    tail = labels[-1]
    start = len(labels) - 1
    while start > 0 and labels[start - 1] == tail:
        start -= 1
    return int(ts[start])
