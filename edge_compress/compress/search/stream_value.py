"""What a residual stream's channel is worth next to one layer's, from what removing it does to the outputs.

The knapsack values a channel by its criterion score normalised within its group, so every group's average
channel is worth the same. That holds for groups with one producing layer; a residual stream (a group that
several layers add into: every block of a stage) carries what all of them wrote, and priced like one
layer's channel it is cut first and hardest (ResNet-56 at 1.5x predicted on raspberry-pi-4: 80.8 % top-1 with
the streams left alone, 50.7 % with them valued like a layer's channels; BENCHMARKS.md, option A).

So, before each round, each stream and up to 8 one-producer groups have their lowest-scored channels (an
eighth of the group, at least one step) zeroed all along the group, exactly as removing them would, on a few
calibration samples. The outputs' relative squared error per unit of knapsack value removed is each group's
damage rate; a stream's weight is its rate over the median rate of the one-producer groups, never below 1
(a stream is never made cheaper than a layer). Without calibration data there is nothing to measure, and
the streams keep weight 1: the caller says so.
"""
from __future__ import annotations

import logging

import torch

from ..criteria.base import Criterion, mean_normalised
from ..pruning.pruner import ChannelPruner
from ..pruning.structures import model_outputs

log = logging.getLogger("compress")

# Calibration samples the outputs are compared on: 8 at CIFAR size, fewer for larger inputs (at least 2), so
# the dozen forward passes per round stay a small part of the search.
SAMPLES, MIN_SAMPLES, PIXELS = 8, 2, 8 * 32 * 32
REFERENCE_GROUPS = 8   # one-producer groups measured for the reference rate (spread over the model)
SHARE = 0.125          # share of a group's channels zeroed


def streams(pruner: ChannelPruner) -> list[str]:
    """Roots of the prunable groups that several layers write into (residual streams)."""
    return _by_producers(pruner)[0]


def _by_producers(pruner: ChannelPruner) -> tuple[list[str], list[str]]:
    """Roots of the groups that can still lose channels: (several producing layers, one producing layer)."""
    view, many, one = pruner.view, [], []
    for r, info in view.groups.items():
        if info.prunable and info.channels > pruner.floor_of(info):
            (many if len(view.producers(r)) > 1 else one).append(r)
    return many, one


def stream_weights(pruner: ChannelPruner, criterion: Criterion, x: torch.Tensor) -> dict[str, float]:
    """Per stream root, the factor on its channels' knapsack value (see the module docstring); {} without
    streams. The criterion must be prepared for the pruner's current model."""
    roots, single = _by_producers(pruner)
    if not roots:
        return {}
    if not single:
        log.warning("residual streams valued like one layer's channels: no one-producer group is left to compare "
                    "them with")
        return {}
    # spread over the model in the graph's order (no forward pass to sort them)
    reference = [single[i * len(single) // min(REFERENCE_GROUPS, len(single))]
                 for i in range(min(REFERENCE_GROUPS, len(single)))]
    pixels = int(x[0].numel() // max(1, x.shape[1])) if x.dim() > 2 else 1
    n = min(len(x), max(MIN_SAMPLES, min(SAMPLES, PIXELS // max(1, pixels))))
    x = x[torch.linspace(0, len(x) - 1, n).round().long()]   # evenly spaced: calibration sets are often stored by class
    model = pruner.model
    was_training = model.training
    model.eval()
    try:
        base = model_outputs(model, x)
        rates = {r: _rate(pruner, criterion, r, x, base) for r in reference + roots}
    finally:
        model.train(was_training)
    ref = sorted(rates[r] for r in reference)
    median = ref[len(ref) // 2]
    if median <= 0:
        log.warning("residual streams valued like one layer's channels: removing the lowest-scored channels of "
                    "most of the %d layers compared with them changed no output", len(reference))
        return {}
    weights = {r: max(1.0, rates[r] / median) for r in roots}
    log.debug("residual streams valued by what removing their channels does to the outputs: %s",
              ", ".join(f"{r} x{w:.3g}" for r, w in weights.items()))
    return weights


def _rate(pruner: ChannelPruner, criterion: Criterion, root: str, x: torch.Tensor, base) -> float:
    """Relative squared output error per unit of knapsack value when the group's lowest-scored channels go
    (the group has room to lose at least one channel: `_by_producers`)."""
    info = pruner.groups[root]
    step = pruner.step_of(info)
    k = min(info.channels - pruner.floor_of(info), max(step, int(round(info.channels * SHARE / step)) * step))
    scores = mean_normalised(criterion.scores(pruner.view, info, pruner.group(root)))
    lowest = torch.argsort(scores)[:k]
    value = float(scores[lowest].sum()) * info.original_channels / info.channels
    with pruner.zeroed(root, sorted(int(i) for i in lowest)):
        out = model_outputs(pruner.model, x)
    err = sum(float(((o - b).double() ** 2).sum() / (b.double() ** 2).sum().clamp_min(1e-30)) for o, b in zip(out, base))
    return err / max(value, 1e-9)
