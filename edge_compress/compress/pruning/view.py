"""The read-only view of a pruner's groups that criteria score through.

A criterion needs the model, the coupled groups and how layers relate through them (which layers
produce a group's channels, which read them, in what order the forward pass runs them); it never
removes channels, so it gets this view and not the pruner (no import of compress.criteria here or in
the pruner: the search hands the criterion's choices to the pruner).
"""
from __future__ import annotations

import torch.nn as nn
import torch_pruning as tp

from .graph import ROOT_TYPES
from .groups import GroupInfo

class GroupView:
    """Groups, producers, readers and execution order of one pruner's model, read-only."""

    def __init__(self, pruner):
        self._pruner = pruner   # the ChannelPruner (pruner.py) whose `view` this is

    @property
    def model(self) -> nn.Module:
        return self._pruner.model

    @property
    def example_input(self):
        return self._pruner.example_input

    @property
    def groups(self) -> dict[str, GroupInfo]:
        """Every group by root, prunable or not (a copy of the mapping; the records are the pruner's)."""
        return dict(self._pruner.groups)

    @property
    def prunable_groups(self) -> list[GroupInfo]:
        return self._pruner.prunable_groups

    def group(self, root: str) -> tp.dependency.Group:
        """The Torch-Pruning group rooted at `root` over its current channels (for Torch-Pruning importances)."""
        return self._pruner.group(root)

    def root_groups_by_name(self) -> dict[str, tp.dependency.Group]:
        return self._pruner.root_groups_by_name()

    def producers(self, root: str) -> list[tuple[str, list[int], list[int]]]:
        """The layers whose output channels the group couples: (layer, its channel idxs, the root's idxs)."""
        return self._pruner.producers(root)

    def readers(self) -> dict[str, list[tuple[str, list[int], list[int]]]]:
        """Per group root: the layers reading its channels, as (layer, its input idxs, the root's idxs)."""
        return self._pruner.consumer_map()

    def member_map(self) -> dict[str, tuple[list[str], list[str]]]:
        """Per group root: the layers losing output channels and the layers losing input channels."""
        return self._pruner.member_map()

    def execution_order(self, types=ROOT_TYPES) -> list[str]:
        return self._pruner.execution_order(types)

    def floor_of(self, info: GroupInfo) -> int:
        return self._pruner.floor_of(info)

    def step_of(self, info: GroupInfo) -> int:
        return self._pruner.step_of(info)
