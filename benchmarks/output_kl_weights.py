"""Information-driven weights across layers (the study's `allocation=kl`, benchmarks/study_plugins.py): how
much output information a layer's weakest channels carry. Measured worse than letting cost decide
(BENCHMARKS.md, "Information criteria study"), so it lives here and not in the product.

The knapsack (compress/search/knapsack.py) divides every group's scores by the group's mean, so any
criterion alone only ranks channels WITHIN a layer; how many channels each layer keeps then follows
from their cost. `allocation=kl` gives the information criteria a say across layers: before each
round, for every group, the channels the criterion ranks lowest (a share `fraction` of the group,
at least one channel block) are masked at the inputs of the layers that consume them, and the
information the network's output loses is measured as KL(p || q) between the current model's
predictive distribution p and the masked one q on calibration images. Divided by the normalised
score those channels carry, that is the group's scale: the output information lost per unit of
normalised score, which makes one group's scores comparable with another's.

Masking a group's channels at its consumers' inputs is what pruning them does to the forward pass
(before BatchNorm is re-estimated). A group whose consumers cannot be masked this way (a consumer
sees the channels at an offset, e.g. after a concatenation) gets the median scale of the others,
and the details say so.
"""
from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from edge_compress.compress.criteria.base import mean_normalised

log = logging.getLogger("compress")

SCALE_FLOOR = 0.05   # of the median scale: a group whose weakest channels look free is not emptied in one round


def _maskable(module: nn.Module, channels: int) -> bool:
    if isinstance(module, nn.Conv2d):
        return module.groups == 1 and module.in_channels == channels
    if isinstance(module, nn.Linear):
        return module.in_features == channels
    return False


@torch.no_grad()
def output_information_scales(view, criterion, x: torch.Tensor, fraction: float = 0.25,
                              max_samples: int = 128) -> tuple[dict[str, float], dict]:
    """Per prunable group root: output KL lost per unit of normalised score of its weakest channels."""
    model = view.model
    was_training = model.training
    model.eval()
    x = x[:max_samples]
    modules = dict(model.named_modules())
    try:
        logp = F.log_softmax(model(x).double(), dim=1)
        members = view.member_map()
        groups = view.root_groups_by_name()
        raw: dict[str, float] = {}
        details: dict[str, dict] = {}
        for info in view.prunable_groups:
            floor = view.floor_of(info)
            if info.channels <= floor or info.root not in groups:
                continue
            consumers = [modules[n] for n in members.get(info.root, ((), ()))[1] if n in modules]
            if not consumers or not all(_maskable(m, info.channels) for m in consumers):
                details[info.root] = {"scale": None, "why": "consumers cannot be masked at the group's channels"}
                continue
            s = mean_normalised(criterion.scores(view, info, groups[info.root]))
            step = view.step_of(info)
            k = min(info.channels - floor, max(step, step * round(fraction * info.channels / step)))
            idx = torch.argsort(s)[:k]
            mask = torch.ones(info.channels)
            mask[idx] = 0.0

            def hook(module, inputs, mask=mask):
                t = inputs[0]
                shape = (1, -1) + (1,) * (t.dim() - 2)
                return (t * mask.to(t.dtype).reshape(shape),) + tuple(inputs[1:])

            handles = [m.register_forward_pre_hook(hook) for m in consumers]
            try:
                logq = F.log_softmax(model(x).double(), dim=1)
            finally:
                for h in handles:
                    h.remove()
            kl = float((logp.exp() * (logp - logq)).sum(1).mean().clamp_min(0.0))
            removed = float(s[idx].sum())
            raw[info.root] = kl / max(removed, 1e-12)
            details[info.root] = {"kl": kl, "channels": int(k), "score_removed": removed}
    finally:
        model.train(was_training)
    unmasked = sorted(r for r, d in details.items() if d.get("why"))
    if unmasked:
        log.info("allocation=kl: %s cannot be masked at their consumers; they get the median scale", ", ".join(unmasked))
    if not raw:
        return {}, details
    median = sorted(raw.values())[len(raw) // 2]
    if not math.isfinite(median) or median <= 0:
        median = 1.0
    scales = {r: max(v, SCALE_FLOOR * median) / median for r, v in raw.items()}
    for r, d in details.items():
        scales.setdefault(r, 1.0)
        d["scale"] = scales[r]
    return scales, details
