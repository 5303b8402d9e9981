"""Randomly pruned variants of a network, for the host fit to measure: the product's own pruner
(``ChannelPruner``) removes randomly chosen channels from every group it can prune safely, so the
variants are shaped exactly as pruned models are, whatever the network's layer names.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn

from ..criteria.base import Criterion
from ..pruning.pruner import ChannelPruner
from ..search.removal import prune_lowest


class RandomChannels(Criterion):
    """Scores channels at random (seeded), so that the channels a group keeps are a random subset."""

    name = "random"

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def scores(self, view, info, group) -> torch.Tensor:
        return torch.rand(info.channels, generator=self.generator)

    def prepare_reads_model(self) -> bool:
        return False


def prunable_in_module_order(pruner: ChannelPruner) -> list:
    """The prunable groups in the order their root layers appear in the model (stable across runs)."""
    order = {name: i for i, (name, _) in enumerate(pruner.model.named_modules())}
    return sorted(pruner.prunable_groups, key=lambda g: order[g.root])


def random_widths(pruner: ChannelPruner, rng: np.random.Generator) -> dict[str, int]:
    """Random widths per group root: one overall level per variant, scattered per group, so that variants
    span light to heavy pruning and no two groups need to agree; each rounded to the group's step and
    kept at or above its floor (the profile's multiple and minimum)."""
    level = rng.uniform(0.1, 1.0)
    out = {}
    for info in prunable_in_module_order(pruner):
        c, step = info.channels, pruner.step_of(info)
        keep = float(np.clip(level + rng.normal(0, 0.25), 0.0, 1.0))
        out[info.root] = int(min(c, max(pruner.floor_of(info), round(keep * c / step) * step)))
    return out


def random_variants(arch: str, count: int, seed: int, state_dict: dict | None = None, multiple: int = 4,
                    min_channels: int = 4) -> list[tuple[dict, nn.Module]]:
    """`count` variants of the registered architecture `arch` (see `variants_of`)."""
    from ..archs import get_arch

    info = get_arch(arch)
    variants = variants_of(info.factory, info.input_shape, count, seed, state_dict, multiple, min_channels)
    return [({"arch": arch, **desc}, model) for desc, model in variants]


def variants_of(factory: Callable[[], nn.Module], input_shape: tuple[int, ...], count: int, seed: int,
                state_dict: dict | None = None, multiple: int = 4,
                min_channels: int = 4) -> list[tuple[dict, nn.Module]]:
    """`count` models from `factory` (with `state_dict` if given) for inputs of `input_shape` (CxHxW), each
    pruned to random widths by a pruner that reuses one safety analysis of the network."""
    base = factory().eval()
    if state_dict is not None:
        base.load_state_dict(state_dict)
    analysed = ChannelPruner(base, torch.zeros(1, *input_shape), multiple, min_channels)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        model = factory().eval()
        model.load_state_dict(base.state_dict())
        pruner = analysed.for_copy(model)
        widths = random_widths(pruner, rng)
        prune_lowest(pruner, RandomChannels(seed * 1000 + i),
                     {root: pruner.groups[root].channels - w for root, w in widths.items()})
        out.append(({"seed": seed, "index": i, "widths": widths}, pruner.model))
    return out
