"""Channel importance from the gradient of mutual information (a reading of Lee et al., ICIP 2020).

The paper's abstract says a module that estimates mutual information is attached to the network, the
gradients of the estimated MI are measured during back-propagation, and their statistics rank the
channels. Its estimator and statistic are not public; this is our reading (ALGORITHMS.md section 3):

- estimator: the matrix-based Renyi MI (alpha = 2 by default: smooth and O(N^2)) between the labels Y
  and either the network output (target="output", the gradient flows back through the whole network to
  every layer) or each layer's own activations (target="layer", the gradient stays in the layer);
- importance of channel c: |sum over the batch and positions of a_c * dI/da_c|, the first-order change of
  the batch's MI estimate when the channel is removed (set to zero), averaged over calibration batches.

Kernel widths are computed from the data and held constant (detached), so the gradient is that of the
MI at a fixed kernel.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .features import FeatureCapture
from .renyi import WIDTH_RULES, entropy, gram_from_sq_dist, paper_sigma, sq_distances, median_sigma

TARGETS = ("output", "layer")


def _gram(x: torch.Tensor, width: str) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    d2 = sq_distances(flat)
    with torch.no_grad():
        sigma = median_sigma(d2) if width == "median" else paper_sigma(flat.shape[0], flat.shape[1])
    return gram_from_sq_dist(d2, sigma)


def renyi_mi(x: torch.Tensor, label_gram: torch.Tensor, alpha: float = 2.0, width: str = "median") -> torch.Tensor:
    """Differentiable I(X; Y) for samples x (N, ...) and a fixed label Gram (N, N)."""
    kx = _gram(x, width)
    return entropy(kx, alpha) + entropy(label_gram, alpha) - entropy(kx * label_gram, alpha)


def mi_gradient_scores(model: nn.Module, x: torch.Tensor, label_gram_of: Callable[[torch.Tensor], torch.Tensor],
                       layers: list[str], *, target: str = "output", alpha: float = 2.0, width: str = "median",
                       batch_size: int = 128, progress: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """Per-channel importance of each layer in `layers` (dict name -> (C,) float64, not normalised).

    `label_gram_of(indices)` gives the label Gram of the samples x[indices] (labels, or the original
    model's predictions). The model is left in eval mode with its parameters untouched.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown MI-gradient target {target!r}; choose one of {', '.join(TARGETS)}")
    if width not in WIDTH_RULES[:2]:
        raise ValueError(f"MI-gradient kernel width must be 'median' or 'paper', got {width!r}")
    was_training = model.training
    model.eval()
    totals: dict[str, torch.Tensor] = {}
    batches = 0
    try:
        with FeatureCapture(model, layers, grad=True) as cap:
            for start in range(0, len(x), batch_size):
                idx = torch.arange(start, min(start + batch_size, len(x)))
                if len(idx) < 4:  # an MI estimate needs a few samples; a short last batch adds noise only
                    continue
                xb = x[idx].clone().requires_grad_(True)  # builds the graph even when parameters are frozen
                feats = cap.run(xb)
                ky = label_gram_of(idx).to(torch.float64)
                tensors = [feats[n].tensor for n in layers]
                if target == "output":
                    out = cap.output[0] if isinstance(cap.output, (tuple, list)) else cap.output
                    mi = renyi_mi(torch.softmax(out.reshape(out.shape[0], -1).double(), 1), ky, alpha, width)
                    grads = torch.autograd.grad(mi, tensors, allow_unused=True)
                else:
                    grads = [torch.autograd.grad(renyi_mi(t, ky, alpha, width), t)[0] for t in tensors]
                for name, a, g in zip(layers, tensors, grads):
                    contrib = torch.zeros(a.shape[1], dtype=torch.float64) if g is None else \
                        (a.detach().double() * g.double()).transpose(0, 1).reshape(a.shape[1], -1).sum(1).abs()
                    if not torch.isfinite(contrib).all():
                        raise ValueError(f"layer {name}: the MI gradient is NaN or inf; check the calibration data")
                    totals[name] = totals.get(name, 0) + contrib.cpu()
                batches += 1
                if progress:
                    progress(len(idx))
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    if batches == 0:
        raise ValueError(f"MI-gradient needs at least 4 calibration samples per batch, got {len(x)}")
    return {n: totals[n] / batches for n in layers}
