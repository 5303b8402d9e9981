"""Structural channel pruning through Torch-Pruning's dependency graph, made safe.

Every coupled group is first pruned on a copy of the model and the copy is run: a group whose pruning
breaks the forward pass or changes the output shape (e.g. the residual streams of ResNets with
zero-padding "option A" shortcuts, the classifier's outputs, ops the graph does not understand) is left
unpruned and reported with the reason. Channels are then removed for real, group by group: the pruner
removes the channels it is given (which ones is the criterion's and the search's business, see
compress/search/), checking that the counts respect the device's channel multiple and minimum.

Torch-Pruning keeps per-op state (concatenation sizes, slice bounds) that pruning updates: every group is
fetched afresh (`group`) before it is scored and pruned, and the graph is rebuilt after a group crossing
a chunk or split (the structures themselves: compress/pruning/structures.py).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch_pruning as tp

from ..archs.resnet_cifar import PadShortcut
from ..errors import PruningError
from ..hooked_pass import hooked_pass
from .depth import removable_blocks, remove_block
from .graph import ROOT_TYPES, all_groups, build_graph
from .groups import GroupInfo, GroupLayers
from .shortcuts import convert_pad_shortcuts
from .structures import (StructureError, crosses_slices, model_outputs, output_shapes, prune_group, randomise, structure_of,
                         suspects, trial_pattern, unit_reason, unit_words, zero_out_channels)
from .view import GroupView


@dataclass
class ChannelPruner:
    model: nn.Module
    example_input: torch.Tensor
    channel_multiple: int = 1
    min_channels: int = 1
    groups: dict[str, GroupInfo] = field(default_factory=dict)
    analysed: bool = False  # True when `groups` comes from an earlier analysis of the same architecture

    def __post_init__(self):
        self.model.eval()
        self.converted_shortcuts = convert_pad_shortcuts(self.model, self.example_input)
        self._names = {m: n for n, m in self.model.named_modules()}
        self._modules = dict(self.model.named_modules())
        self._output_shape = output_shapes(self.model, self.example_input)
        self.graph = build_graph(self.model, self.example_input)
        if not self.analysed:
            self._analyse()

    def for_copy(self, model: nn.Module) -> "ChannelPruner":
        """A pruner for a deep copy of this pruner's model, reusing the (costly) safety analysis."""
        groups = {k: dataclasses.replace(g, kept=list(g.kept), members=list(g.members)) for k, g in self.groups.items()}
        return ChannelPruner(model, self.example_input, self.channel_multiple, self.min_channels, groups, analysed=True)

    @property
    def view(self) -> GroupView:
        """What a criterion may read of the groups (groups, producers, readers, execution order, model)."""
        return GroupView(self)

    # -- analysis -----------------------------------------------------------------------------------

    def _root_groups(self) -> list[tuple[str, tp.dependency.Group]]:
        return [(self._names[root], group) for root, group in all_groups(self.graph)]

    def group(self, name: str) -> tp.dependency.Group:
        """The group rooted at `name` over its current channels, fetched afresh from the graph (indices through
        concatenations and slices depend on what was pruned before)."""
        module = self._modules[name]
        handler = self.graph.get_pruner_of_module(module).prune_out_channels
        return self.graph.get_pruning_group(module, handler, list(range(self.groups[name].channels)))

    def _analyse(self) -> None:
        for name, group in self._root_groups():
            n = len(group[0].idxs)
            # Layers of the model only: Torch-Pruning's functional-op nodes (ReLU, add, pad) are nn.Modules too.
            members = sorted({self._names[d.target.module] for d, _ in group if d.target.module in self._names})
            divisor, block, chunks, problem = structure_of(self.graph, group, self._names)
            info = GroupInfo(name, n, n, members, divisor=divisor, block=block, chunks=chunks)
            if problem:
                info.prunable, info.reason = False, problem
            elif n <= divisor * block:
                info.prunable, info.reason = False, unit_reason(n, divisor, block)
            elif n <= self.floor_of(info) or n < 2:
                per = f" ({n // chunks} in each of its {chunks} torch.chunk parts)" if chunks > 1 else ""
                info.prunable, info.reason = False, f"{n} channels{per}: already at the minimum of {self.min_channels}"
            else:
                problem = self._trial(name, group[0].dep.handler, trial_pattern(n, divisor, block))
                if problem:
                    info.prunable, info.reason = False, problem
            self.groups[name] = info

    def _trial(self, root: str, handler, idxs: list[int]) -> str:
        """Check on a copy that pruning the group is exactly removing its channels; '' if so, else why not.

        The copy gets random weights (so no channel is dead by accident); the trial channels `idxs` are zeroed
        all along the group (output filters, biases, norm scale and shift) and the copy is run; then the
        same channels are pruned and the copy run again. Both outputs must agree: a group whose indices
        the dependency graph maps wrongly (a zero-padding shortcut, a channel shuffle) fails here even
        when every shape still fits.
        """
        trial = copy.deepcopy(self.model)
        randomise(trial)
        graph = build_graph(trial, self.example_input)
        module = dict(trial.named_modules())[root]
        group = None
        try:
            group = graph.get_pruning_group(module, handler, idxs=idxs)
            zero_out_channels(graph, group)
            reference = model_outputs(trial, self.example_input)
            prune_group(group)
            outputs = model_outputs(trial, self.example_input)
        except StructureError as e:
            return str(e)
        except Exception as e:  # noqa: BLE001 - any failure means this group cannot be pruned safely
            where = suspects(group) if group is not None else ""
            return (f"pruning it breaks the forward pass ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
                    + (f"; the group crosses {where}" if where else ""))
        shapes = tuple(t.shape for t in outputs)
        if shapes != self._output_shape:
            return f"pruning it changes the model's output shape {self._output_shape} -> {shapes}"
        for ref, out in zip(reference, outputs):
            if not torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()) + 1e-6):
                where = suspects(group) or "an op whose channel mapping the dependency graph does not know"
                return f"pruning it is not the same as zeroing those channels: the indices are mapped wrongly across {where}"
        return ""

    @property
    def prunable_groups(self) -> list[GroupInfo]:
        return [g for g in self.groups.values() if g.prunable]

    # -- pruning ------------------------------------------------------------------------------------

    def target_channels(self, info: GroupInfo, keep_fraction: float) -> int:
        """Channels to keep for a keep fraction of the original: rounded to the multiple, >= the minimum."""
        floor = self.floor_of(info)
        want = info.original_channels * keep_fraction
        mult = self.step_of(info)
        rounded = int(round(want / mult)) * mult if mult > 1 else int(round(want))
        return max(floor, min(info.channels, rounded))

    def floor_of(self, info: GroupInfo) -> int:
        """The fewest channels a group may keep: the profile's minimum (in each torch.chunk part), in whole
        convolution groups or chunk parts of whole GroupNorm groups."""
        unit = info.divisor * info.block
        floor = max(min(self.min_channels, info.original_channels // info.chunks), 1) * info.chunks
        return -(-floor // unit) * unit

    def step_of(self, info: GroupInfo) -> int:
        """The granularity of a group's channel count: the profile's multiple (in each torch.chunk part), its
        grouped convs' groups or chunk parts, and its GroupNorms' channels per group."""
        return math.lcm(max(1, self.channel_multiple) * info.chunks, info.divisor * info.block)

    def remove(self, name: str, idxs: list[int]) -> bool:
        """Remove channels `idxs` (current numbering) of the group rooted at `name`; whether they went.

        A count below the group's minimum or off its unit is a bug of the caller (PruningError); a group
        that Torch-Pruning or its structure refuses leaves the search, and the report says why.
        """
        info = self.groups[name]
        n_prune, keep = len(idxs), info.channels - len(idxs)
        if keep < self.floor_of(info) or keep < 1:
            raise PruningError(f"refusing to prune {name} to {keep} channels (minimum {self.min_channels})")
        unit = info.divisor * info.block
        if n_prune % unit or info.channels % unit:
            raise PruningError(f"{name}: {n_prune} of {info.channels} channels cannot go in "
                               f"{unit_words(info.divisor, info.block)}")
        module = self._modules[name]
        handler = self.graph.get_pruner_of_module(module).prune_out_channels
        pruning_group = self.graph.get_pruning_group(module, handler, idxs=list(idxs))
        if not self.graph.check_pruning_group(pruning_group):
            # Never skip silently: the group leaves the search and the report says why.
            info.prunable, info.reason = False, (f"Torch-Pruning refused to prune it to {keep} channels "
                                                 "(its check_pruning_group failed)")
            return False
        try:
            prune_group(pruning_group)   # checks GroupNorms before anything is pruned
        except StructureError as e:
            info.prunable, info.reason = False, str(e)
            return False
        dropped = set(idxs)
        info.kept = [k for i, k in enumerate(info.kept) if i not in dropped]
        info.channels = keep
        if crosses_slices(pruning_group):   # Torch-Pruning's slice bounds are not updated exactly: rebuild
            self.graph = build_graph(self.model, self.example_input)
        return True

    @contextlib.contextmanager
    def zeroed(self, name: str, idxs: list[int]):
        """Channels `idxs` of the group rooted at `name` made exactly zero all along the group, as removing them
        would (filters, biases, norm scale and shift, the positions a zero-padding shortcut feeds), and put back
        on exit: what removing them would do to the outputs, without removing them."""
        module = self._modules[name]
        handler = self.graph.get_pruner_of_module(module).prune_out_channels
        group = self.graph.get_pruning_group(module, handler, idxs=list(idxs))
        tensors, maps, seen = [], [], set()
        for dep, _ in group:
            m = dep.target.module
            if id(m) in seen:
                continue
            seen.add(id(m))
            if isinstance(m, PadShortcut):
                maps.append((m, m.in_channels, list(m.channel_map)))
            for t in (getattr(m, "weight", None), getattr(m, "bias", None)):
                if isinstance(t, torch.Tensor):
                    tensors.append((t, t.detach().clone()))
        try:
            zero_out_channels(self.graph, group)
            yield
        finally:
            with torch.no_grad():
                for t, saved in tensors:
                    t.copy_(saved)
            for m, n, channel_map in maps:
                m.set_channel_map(n, channel_map)

    def root_groups_by_name(self) -> dict:
        return dict(self._root_groups())

    def member_map(self) -> dict[str, tuple[list[str], list[str]]]:
        """Per group root: the layers losing output channels and the layers losing input channels."""
        layers = self._group_layers()
        return {r: (sorted({p for p, _, _ in prods}), [n for n, _, _ in layers.reads[r]])
                for r, prods in layers.producers.items()}

    def depth_blocks(self) -> dict[str, list[str]]:
        """Removable residual blocks -> the prunable groups that live entirely inside them."""
        out = {}
        for block in removable_blocks(self.model):
            inside = [g.root for g in self.prunable_groups
                      if all(m.startswith(block + ".") for m in g.members)]
            if inside:
                out[block] = inside
        return out

    def without_blocks(self, blocks: list[str]) -> "ChannelPruner":
        """Remove residual blocks (depth pruning) and return a pruner for the changed model.

        Groups inside the blocks disappear; a group whose root layer was inside a block gets a new root
        in the rebuilt graph and is left unpruned (its scores and channel record belonged to the old root).
        """
        for b in blocks:
            remove_block(self.model, b)
        groups = {k: g for k, g in self.groups.items() if not any(k.startswith(b + ".") for b in blocks)}
        new = ChannelPruner(self.model, self.example_input, self.channel_multiple, self.min_channels, groups,
                            analysed=True)
        for name, group in new._root_groups():
            if name not in new.groups:
                n = len(group[0].idxs)
                members = sorted({new._names[d.target.module] for d, _ in group if d.target.module in new._names})
                new.groups[name] = GroupInfo(name, n, n, members, prunable=False,
                                             reason="its root layer was removed with a residual block; left as it is")
        new.removed_blocks = list(getattr(self, "removed_blocks", [])) + list(blocks)
        new.verify()
        return new

    def execution_order(self, types=ROOT_TYPES) -> list[str]:
        """Names of the model's layers of `types` in the order a forward pass runs them."""
        order: list[str] = []
        hooked_pass(self.model, self.example_input,
                    [(m, lambda mod, i, o, n=n: order.append(n) if n not in order else None)
                     for n, m in self.model.named_modules() if isinstance(m, types)])
        return order

    def producers(self, root: str) -> list[tuple[str, list[int], list[int]]]:
        """The layers whose output channels a group couples: (layer, its channel idxs, the root's idxs)."""
        found = self.producer_map()
        if root not in found:
            raise KeyError(f"no group rooted at {root!r}")
        return found[root]

    def producer_map(self) -> dict[str, list[tuple[str, list[int], list[int]]]]:
        """`producers` of every group."""
        return self._group_layers().producers

    def _group_layers(self) -> GroupLayers:
        """One traversal of the dependency graph per pruning state (cached until a group's width changes)."""
        key = tuple(g.channels for g in self.groups.values())
        if getattr(self, "_layer_cache", (None,))[0] != key:
            producers, reads = {}, {}
            for name, group in self._root_groups():
                prod, cons = [], {}
                for i, (dep, idxs) in enumerate(group):
                    module = dep.target.module
                    if not isinstance(module, ROOT_TYPES) or module not in self._names:
                        continue
                    if self.graph.is_out_channel_pruning_fn(dep.handler):
                        prod.append((self._names[module], list(idxs), list(group[i].root_idxs)))
                    elif self.graph.is_in_channel_pruning_fn(dep.handler):   # a layer may read them twice
                        seen = cons.setdefault(self._names[module], ([], []))
                        seen[0].extend(idxs)
                        seen[1].extend(group[i].root_idxs)
                producers[name] = prod
                mine = {p for p, _, _ in prod}
                reads[name] = [(n, *cons[n]) for n in sorted(set(cons) - mine)]
            self._layer_cache = (key, GroupLayers(producers, reads))
        return self._layer_cache[1]

    def consumer_map(self) -> dict[str, list[tuple[str, list[int], list[int]]]]:
        """Per group root: the layers reading its channels, as (layer, its input channel idxs, the root's idxs)."""
        return self._group_layers().reads

    def at_minimum(self) -> bool:
        return all(self.target_channels(g, 0.0) >= g.channels for g in self.prunable_groups)

    def verify(self) -> None:
        """A pruned model must run and keep its output shape; anything else is a bug, never returned."""
        try:
            shapes = output_shapes(self.model, self.example_input)
        except Exception as e:  # noqa: BLE001
            raise PruningError(f"the pruned model no longer runs ({type(e).__name__}: {e}); please report this model") from None
        if shapes != self._output_shape:
            raise PruningError(f"pruning changed the output shape {self._output_shape} -> {shapes}")
