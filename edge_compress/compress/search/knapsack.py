"""Which channels to remove in one round: a knapsack over coupled groups, priced by the device's cost model.

Value of a channel = its criterion score, normalised by its group's mean (so every group's average
channel is worth 1 and criteria of any scale compare across groups), times original / current width
of its group: a channel of a layer already thinned to a quarter counts four times, which keeps the
cheapest-per-MAC layers from being emptied first (measured on ResNet-56, BENCHMARKS.md). Weight of a block of channels =
the resource its removal saves (predicted latency on the target, MACs, parameters or memory),
computed from the layer shapes: a group's producers lose output channels, its consumers input channels.
The greedy fills the round's saving with the blocks of lowest value per unit saved (as HALP does for
latency and saliency), one block (the profile's channel multiple) at a time, re-pricing the group after
each block; the resource is then recomputed exactly from the pruned model, so the linearisation never
accumulates across rounds.

Under a budget of MACs, parameters or memory, a cut that saves the resource can make the model slower (a
width below the kernels' channel block runs on slower code). When the target has a usable cost model, each
block is also priced in predicted latency, and a block predicted to slow the model down goes after every
block that does not. Blocks that save no predicted latency are NOT demoted: with channel alignment most
single blocks save none until a width crosses an alignment step, and ranking them last overrode the
criterion (the study's ResNet-20 at 50 % MACs on host fell from 55 % to 31 % top-1).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from ..costmodel.model import LayerCost, predict_latency_ms, predict_memory_mb
from ..criteria.base import Criterion, mean_normalised
from ..pruning.view import GroupView

RESOURCES = ("latency_ms", "macs", "params", "memory_mb")


@dataclass
class Plan:
    remove: dict[str, int]          # group root -> channels to remove this round
    saving: float                   # the resource saved, as priced (linear estimate)
    value: float                    # normalised importance removed
    blocks: list[str] = dataclasses.field(default_factory=list)   # residual blocks to remove (depth pruning)


def _scaled(c: LayerCost, out_keep: float = 1.0, in_keep: float = 1.0, depthwise: bool = False) -> LayerCost:
    """The layer's cost with a share of its output / input channels gone."""
    if depthwise:  # a depthwise conv loses input, output and weights together
        k = out_keep * in_keep
        return dataclasses.replace(c, in_channels=round(c.in_channels * k), out_channels=round(c.out_channels * k),
                                   groups=max(1, round(c.groups * k)),
                                   macs=round(c.macs * k), weight_elems=round(c.weight_elems * k),
                                   input_elems=round(c.input_elems * k), output_elems=round(c.output_elems * k))
    return dataclasses.replace(c, in_channels=round(c.in_channels * in_keep), out_channels=round(c.out_channels * out_keep),
                               macs=round(c.macs * out_keep * in_keep), weight_elems=round(c.weight_elems * out_keep * in_keep),
                               input_elems=round(c.input_elems * in_keep), output_elems=round(c.output_elems * out_keep))


class ResourceModel:
    """Prices removing n channels from a group, from the current model's layer costs."""

    def __init__(self, view: GroupView, costs: list[LayerCost], factors, total_params: int):
        self.view, self.costs, self.factors, self.total_params = view, costs, factors, total_params
        self.by_name = {c.name: i for i, c in enumerate(costs)}
        modules = dict(view.model.named_modules())
        self.depthwise = {n for n, m in modules.items()
                          if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels}
        self.members = view.member_map()   # root -> (producers, consumers) layer names
        self.groups = view.groups

    def value(self, resource: str, costs: list[LayerCost] | None = None, params: int | None = None) -> float:
        costs = self.costs if costs is None else costs
        params = self.total_params if params is None else params
        if resource == "latency_ms":
            v = predict_latency_ms(costs, self.factors)
            if v is None:
                raise ValueError("the profile's cost model has no peak compute or bandwidth: latency cannot be predicted")
            return v
        if resource == "macs":
            return float(sum(c.macs for c in costs))
        if resource == "params":
            return float(params)
        if resource == "memory_mb":
            return predict_memory_mb(costs, params, self.factors.bytes_per_element)
        raise ValueError(f"unknown resource {resource!r}")

    def after(self, removals: dict[str, int], blocks: tuple[str, ...] = ()) -> tuple[list[LayerCost], int]:
        """Layer costs and parameter count with `removals` (root -> channels) and `blocks` removed."""
        out_keep: dict[str, float] = {}
        in_keep: dict[str, float] = {}
        for root, n in removals.items():
            info = self.groups[root]
            keep = (info.channels - n) / info.channels
            producers, consumers = self.members[root]
            for p in producers:
                out_keep[p] = out_keep.get(p, 1.0) * keep
            for c in consumers:
                in_keep[c] = in_keep.get(c, 1.0) * keep
        costs = list(self.costs)
        params = self.total_params
        for name in set(out_keep) | set(in_keep):
            i = self.by_name.get(name)
            if i is None:
                continue
            old = costs[i]
            new = _scaled(old, out_keep.get(name, 1.0), in_keep.get(name, 1.0), name in self.depthwise)
            params -= old.weight_elems - new.weight_elems
            costs[i] = new
        if blocks:
            gone = [c for c in costs if any(c.name.startswith(b + ".") for b in blocks)]
            params -= sum(c.weight_elems for c in gone)
            costs = [c for c in costs if c not in gone]
        return costs, params

    def saving(self, resource: str, removals: dict[str, int], blocks: tuple[str, ...] = ()) -> float:
        costs, params = self.after(removals, blocks)
        return self.value(resource) - self.value(resource, costs, params)


def plan_round(view: GroupView, criterion: Criterion, resource_model: ResourceModel, resource: str, needed: float,
               block_of: Callable[[object], int], floor_of: Callable[[object], int],
               depth_blocks: dict[str, list[str]] | None = None, prefer_faster: bool = True,
               weights: dict[str, float] | None = None) -> Plan:
    """Blocks to remove so that the priced saving of `resource` reaches `needed` at the least importance.

    `depth_blocks` (residual block -> the prunable groups inside it) adds whole-block removal as an item
    once every group inside the block is at its minimum: its value is what is left of those groups,
    its weight everything the block's layers cost (overhead included). `prefer_faster`: under a budget other
    than latency, blocks that save no predicted latency go last (see the module docstring). `weights`: per
    group root, a factor on its channels' value (residual streams, search/stream_value.py).
    """
    scores: dict[str, torch.Tensor] = {}
    groups = view.groups
    own = criterion.group_weights()   # the criterion's own weighting across layers, if any
    for root, group in view.root_groups_by_name().items():
        info = groups.get(root)
        if info is None or not info.prunable or info.channels <= floor_of(info):
            continue
        scores[root] = torch.sort(mean_normalised(criterion.scores(view, info, group))).values
        if own:
            scores[root] = scores[root] * own.get(root, 1.0)
        if weights:
            scores[root] = scores[root] * weights.get(root, 1.0)
    remove: dict[str, int] = {r: 0 for r in scores}
    priced: dict[str, tuple[float, float, int]] = {}
    faster: dict[str, float | None] = {}

    def price(root: str, remove: dict[str, int] = remove, faster: dict = faster) -> tuple[float, float, int] | None:
        info = groups[root]
        n = remove[root]
        room = info.channels - floor_of(info) - n
        step = block_of(info)
        if min(step, room) <= 0:
            return None
        before = resource_model.saving(resource, {**remove, root: n}) if n else 0.0
        block = min(step, room)
        while True:   # grow the block until it saves something: kernels work on padded channel blocks
            gain = resource_model.saving(resource, {**remove, root: n + block}) - before
            if gain > 0 or block >= room:
                break
            block = min(block + view.step_of(info), room)
        # A thinner layer loses more per channel: scale by how far the group has already shrunk.
        thinning = info.original_channels / max(1, info.channels - n)
        faster[root] = latency_gain({**remove, root: n}, {**remove, root: n + block})
        return float(scores[root][n:n + block].sum()) * thinning, gain, block

    def latency_gain(before: dict[str, int], after: dict[str, int]) -> float | None:
        """Predicted latency saved by going from `before` to `after`; None when latency is the resource already
        or cannot be predicted."""
        if not latency_aware:
            return None
        return resource_model.saving("latency_ms", after) - resource_model.saving("latency_ms", before)

    latency_aware = prefer_faster and resource != "latency_ms" and getattr(resource_model.factors, "usable", False)

    def ratio(entry: tuple[float, float, int]) -> float:
        return entry[0] / entry[1] if entry[1] > 0 else float("inf")

    def cheapest(items: dict, faster: dict) -> str | None:
        """The item of lowest importance per unit saved (one predicted to slow the model down after every one that
        does not); None when nothing left saves anything."""
        root = min(items, key=lambda r: (_slows(faster.get(r)), ratio(items[r])))
        if items[root][1] <= 0 and all(p[1] <= 0 for p in items.values()):
            return None
        return root

    def take(root: str, items: dict, remove: dict[str, int], faster: dict) -> float:
        """Remove the channel item `root` from `remove`, re-price the group in `items`; the importance removed."""
        value, _, block = items[root]
        remove[root] += block
        p = price(root, remove, faster)
        if p:
            items[root] = p
        else:
            del items[root]
        return value

    def channel_fill(target: float) -> float | None:
        """The importance the greedy would remove to reach `target` with channels alone from here (None: it cannot):
        what a coarse block is weighed against."""
        sim, sim_faster = dict(remove), dict(faster)
        items = {r: p for r, p in priced.items() if not r.startswith("block:")}
        done, value = saved, 0.0
        while done < target and items:
            r = cheapest(items, sim_faster)
            if r is None:
                return None
            value += take(r, items, sim, sim_faster)
            done = resource_model.saving(resource, sim, tuple(blocks))
        return value if done >= target else None

    for r in scores:
        p = price(r)
        if p:
            priced[r] = p
    for block, roots in (depth_blocks or {}).items():
        infos = [groups[r] for r in roots if r in groups]
        if infos and all(i.prunable and i.channels <= floor_of(i) for i in infos):
            # What goes: the inner channels (at their thinned value) and everything the block adds to
            # the stream (its other layers' outputs), each channel worth the average 1.
            inner = sum(len(i.kept) * i.original_channels / i.channels for i in infos)
            added = sum(c.out_channels for c in resource_model.costs
                        if c.name.startswith(block + ".") and c.name not in roots)
            value = float(inner + added)
            priced["block:" + block] = (value, resource_model.saving(resource, {}, (block,)), 0)
    blocks: list[str] = []
    saved = value_removed = 0.0
    fill_at: tuple | None = None   # (moves made, importance of the channel-only fill from there)
    while saved < needed and priced:
        # lowest importance per unit of resource saved; a block that saves nothing goes last, and one predicted
        # to slow the model down goes after every one that does not
        root = cheapest(priced, faster)
        if root is None:
            break
        value, gain, _ = priced[root]
        if root.startswith("block:"):
            if gain > BLOCK_OVERSHOOT * (needed - saved):
                moves = sum(remove.values()) + len(blocks)   # grows with every move: the state's identity
                if fill_at is None or fill_at[0] != moves:   # once per state: waiting blocks leave it unchanged
                    fill_at = (moves, channel_fill(needed))
                if fill_at[1] is not None and fill_at[1] < value:
                    del priced[root]   # it would overshoot the round by far and channels fill it for less: it waits
                    continue
            blocks.append(root[6:])
            del priced[root]
            value_removed += value
        else:
            value_removed += take(root, priced, remove, faster)
        # exactly, not the sum of the gains: groups sharing a layer (a residual stream and the inner channels
        # of a conv reading it) scale it together, so a price cached before the other's removal is off
        saved = resource_model.saving(resource, remove, tuple(blocks))
    return Plan({r: n for r, n in remove.items() if n}, saved, value_removed, blocks)


# A whole block is one coarse item: where it alone would save more than this multiple of what the round still needs
# and channels can fill the round at less importance, they do and the block waits for a round that needs it (on a
# measured host a ResNet-56 block as a last round's last pick took a 1.5x budget to 1.63x and cost 4 points of top-1).
BLOCK_OVERSHOOT = 2.0

# Predicted changes this small are rounding in the cost model, not a latency change.
_NO_GAIN_MS = 1e-9


def _slows(latency_gain: float | None) -> bool:
    """Whether removing a block is predicted to make the model slower (None: not priced in latency)."""
    return latency_gain is not None and latency_gain < -_NO_GAIN_MS
