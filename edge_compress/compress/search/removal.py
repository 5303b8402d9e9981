"""The criterion's choice handed to the pruner: the lowest-scoring channels of each group, group by group.

Each group is scored after the groups before it were pruned (a group's Torch-Pruning magnitude reads its
consumers' weights, which earlier groups thin), from the group fetched afresh, exactly as it is removed.
"""
from __future__ import annotations

from ..criteria.allocation import layer_keep_fractions
from ..criteria.base import Criterion
from ..errors import PruningError
from ..pruning.pruner import ChannelPruner
from ..pruning.structures import lowest_units


def prune_lowest(pruner: ChannelPruner, criterion: Criterion, remove: dict[str, int]) -> int:
    """Remove `remove[root]` channels (the criterion's lowest) from each group; return channels removed."""
    view = pruner.view
    removed = 0
    for name in list(pruner.groups):
        info = pruner.groups[name]
        n_prune = remove.get(name, 0)
        if not info.prunable or n_prune <= 0:
            continue
        scores = criterion.scores(view, info, pruner.group(name))   # afresh: earlier groups may have moved its indices
        if scores is None or len(scores) != info.channels:
            raise PruningError(f"criterion gave no usable scores for group {name} "
                               f"({None if scores is None else len(scores)} for {info.channels} channels)")
        if pruner.remove(name, lowest_units(scores.detach().cpu().double(), n_prune, info.divisor, info.block)):
            removed += n_prune
    pruner.verify()
    return removed


def prune_to(pruner: ChannelPruner, criterion: Criterion, keep_fraction: float) -> int:
    """Prune the prunable groups to `keep_fraction` of the original channels overall (shared out by the
    criterion's own keep fractions, if it has them); return channels removed."""
    fractions = layer_keep_fractions(pruner.prunable_groups, criterion.own_keep_fractions(), keep_fraction)
    keep = {g.root: pruner.target_channels(g, fractions[g.root]) for g in pruner.prunable_groups}
    return prune_lowest(pruner, criterion, {r: pruner.groups[r].channels - k for r, k in keep.items()})
