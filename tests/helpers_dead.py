"""Dead-channel exactness, shared by test_structures.py (hand-written structures) and test_zoo.py (the registry).

The claim tested: channels that contribute nothing downstream can be pruned without changing the outputs. A test
makes some channels dead, a criterion (`Targeted`) ranks exactly those lowest, `prune_dead` removes them, and
`assert_same_outputs` compares. How channels are made dead is each file's business (by hand from the architecture,
or from the dependency graph for every registered one); what counts as "the same" is decided here, once.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from edge_compress.compress.criteria.base import Criterion
from edge_compress.compress.pruning.pruner import ChannelPruner
from edge_compress.compress.search.removal import prune_to


@torch.no_grad()
def zero_channels(idxs, *layers) -> None:
    """Zero output channels `idxs` of convs (filters and bias) and norms (scale and shift)."""
    for layer in layers:
        layer.weight[list(idxs)] = 0
        if layer.bias is not None:
            layer.bias[list(idxs)] = 0


class Targeted(Criterion):
    """Scores 0 for the dead ORIGINAL channels of a group (through `info.kept`), 1 for the others, and allocates
    every group exactly the fraction that removes its dead channels."""

    name = "targeted"

    def __init__(self, dead: dict[str, list[int]], original: dict[str, int]):
        self.dead = {root: set(idxs) for root, idxs in dead.items()}
        self.original = original

    def scores(self, view, info, group):
        dead = self.dead.get(info.root, set())
        return torch.tensor([0.0 if k in dead else 1.0 for k in info.kept])

    def own_keep_fractions(self):
        return {root: 1 - len(self.dead.get(root, ())) / n for root, n in self.original.items()}


def prune_dead(pruner: ChannelPruner, dead: dict[str, list[int]]) -> None:
    """Prune exactly the channels `dead[root]` (original numbering) of each group, and check that they went."""
    crit = Targeted(dead, {g.root: g.original_channels for g in pruner.prunable_groups})
    own = sum(f * crit.original[r] for r, f in crit.own_keep_fractions().items()) / sum(crit.original.values())
    prune_to(pruner, crit, own)
    for g in pruner.groups.values():
        assert set(range(g.original_channels)) - set(g.kept) == set(dead.get(g.root, ())), g.root


def outputs_of(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The model's outputs as a list (one tensor, a tuple or a dict of them)."""
    with torch.no_grad():
        y = model(x)
    if isinstance(y, dict):
        return list(y.values())
    return list(y) if isinstance(y, (tuple, list)) else [y]


def assert_same_outputs(after: list[torch.Tensor], before: list[torch.Tensor]) -> None:
    """Equal to float tolerance, relative to each output's scale (an untrained net's logits may be large)."""
    assert len(after) == len(before)
    for a, b in zip(after, before):
        scale = max(1.0, float(b.abs().max()))
        torch.testing.assert_close(a, b, atol=1e-5 * scale, rtol=1e-4)


def largest_change(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))
