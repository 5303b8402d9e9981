"""Structural channel pruning through Torch-Pruning's dependency graph, made safe.

Every coupled group is first pruned on a copy of the model and the copy is run: a group whose pruning
breaks the forward pass or changes the output shape (e.g. the residual streams of ResNets with
zero-padding "option A" shortcuts, the classifier's outputs, ops the graph does not understand) is left
unpruned and reported with the reason. Channels are then removed for real, group by group, with kept
counts rounded to the device's channel multiple and never below its minimum.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch_pruning as tp

from .criteria import Criterion, TorchPruningCriterion
from .errors import PruningError

ROOT_TYPES = (nn.Conv2d, nn.Conv1d, nn.Linear)


@dataclass(frozen=True)
class _GroupLayers:
    """Per group root: the layers losing output channels as (layer, its idxs, the root's idxs), and those
    losing input channels, sorted by name, as (layer, its input idxs, the root's idxs)."""
    producers: dict
    reads: dict


@dataclass
class GroupInfo:
    root: str                  # name of the layer whose output channels define the group
    original_channels: int
    channels: int              # current
    members: list[str]         # every layer the group touches
    prunable: bool = True
    reason: str = ""           # why it is left unpruned
    kept: list[int] = field(default_factory=list)  # original channel indices still present, in order
    divisor: int = 1           # grouped convs in the group: channels go in equal numbers from each conv group

    def __post_init__(self):
        if not self.kept:
            self.kept = list(range(self.channels))

    def to_dict(self) -> dict:
        return {"root": self.root, "original_channels": self.original_channels, "channels": self.channels,
                "members": self.members, "prunable": self.prunable, "reason": self.reason}


@dataclass
class ChannelPruner:
    model: nn.Module
    example_input: torch.Tensor
    criterion: Criterion | tp.importance.Importance
    channel_multiple: int = 1
    min_channels: int = 1
    groups: dict[str, GroupInfo] = field(default_factory=dict)
    analysed: bool = False  # True when `groups` comes from an earlier analysis of the same architecture

    def __post_init__(self):
        if not isinstance(self.criterion, Criterion):
            self.criterion = TorchPruningCriterion("custom", self.criterion)
        self.model.eval()
        self._names = {m: n for n, m in self.model.named_modules()}
        self._modules = dict(self.model.named_modules())
        self._output_shape = _output_shapes(self.model, self.example_input)
        self.graph = tp.DependencyGraph().build_dependency(self.model, example_inputs=self.example_input)
        if not self.analysed:
            self._analyse()

    def for_copy(self, model: nn.Module, criterion=None) -> "ChannelPruner":
        """A pruner for a deep copy of this pruner's model, reusing the (costly) safety analysis."""
        groups = {k: dataclasses.replace(g, kept=list(g.kept), members=list(g.members)) for k, g in self.groups.items()}
        return ChannelPruner(model, self.example_input, criterion or self.criterion, self.channel_multiple,
                             self.min_channels, groups, analysed=True)

    # -- analysis -----------------------------------------------------------------------------------

    def _root_groups(self) -> list[tuple[str, tp.dependency.Group]]:
        out = []
        for group in self.graph.get_all_groups(root_module_types=ROOT_TYPES):
            root = group[0].dep.target.module
            # The root may be a depthwise conv when the graph reaches it first: any out-channel handler.
            if not self.graph.is_out_channel_pruning_fn(group[0].dep.handler):
                continue
            out.append((self._names[root], group))
        return out

    def _analyse(self) -> None:
        for name, group in self._root_groups():
            n = len(group[0].idxs)
            # Layers of the model only: Torch-Pruning's functional-op nodes (ReLU, add, pad) are nn.Modules too.
            members = sorted({self._names[d.target.module] for d, _ in group if d.target.module in self._names})
            info = GroupInfo(name, n, n, members, divisor=self._divisor(group))
            floor = min(self.min_channels, n)
            if n <= floor or n < 2:
                info.prunable, info.reason = False, f"{n} channels: already at the minimum of {self.min_channels}"
            else:
                problem = self._trial(name, group[0].dep.handler, n)
                if problem:
                    info.prunable, info.reason = False, problem
            self.groups[name] = info

    def _trial(self, root: str, handler, n: int) -> str:
        """Check on a copy that pruning the group is exactly removing its channels; '' if so, else why not.

        The copy gets random weights (so no channel is dead by accident); the trial channels are zeroed
        all along the group (output filters, biases, norm scale and shift) and the copy is run; then the
        same channels are pruned and the copy run again. Both outputs must agree: a group whose indices
        the dependency graph maps wrongly (a zero-padding shortcut, a channel shuffle) fails here even
        when every shape still fits.
        """
        trial = copy.deepcopy(self.model)
        _randomise(trial)
        graph = tp.DependencyGraph().build_dependency(trial, example_inputs=self.example_input)
        module = dict(trial.named_modules())[root]
        try:
            group = graph.get_pruning_group(module, handler, idxs=list(range(0, n, 2)))
            _zero_out_channels(graph, group)
            reference = _outputs(trial, self.example_input)
            group.prune()
            outputs = _outputs(trial, self.example_input)
        except Exception as e:  # noqa: BLE001 - any failure means this group cannot be pruned safely
            return f"pruning it breaks the forward pass ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
        shapes = tuple(t.shape for t in outputs)
        if shapes != self._output_shape:
            return f"pruning it changes the model's output shape {self._output_shape} -> {shapes}"
        for ref, out in zip(reference, outputs):
            if not torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()) + 1e-6):
                return ("pruning it is not the same as zeroing those channels: the dependency graph maps its "
                        "channel indices wrongly (e.g. a zero-padding shortcut or a channel shuffle)")
        return ""

    def _divisor(self, group) -> int:
        """Grouped convolutions in the group: kept counts must stay a multiple of their groups."""
        d = 1
        for dep, _ in group:
            m = dep.target.module
            if isinstance(m, nn.modules.conv._ConvNd) and 1 < m.groups < max(m.in_channels, m.out_channels):
                d = math.lcm(d, m.groups)
        return d

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
        """The fewest channels a group may keep: the profile's minimum, in whole convolution groups."""
        floor = min(self.min_channels, info.original_channels)
        return -(-floor // info.divisor) * info.divisor

    def step_of(self, info: GroupInfo) -> int:
        """The granularity of a group's channel count: the profile's multiple and its grouped convs' groups."""
        return math.lcm(max(1, self.channel_multiple), info.divisor)

    def prepare_criterion(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        """Give the criterion the calibration data (data-driven criteria score here; others do nothing)."""
        self.criterion.prepare(self, x, y)

    def keep_fractions(self, keep_fraction: float) -> dict[str, float]:
        """Per-group keep fractions for an overall keep fraction of the prunable channels.

        Uniform unless the criterion suggests its own per-group fractions f_g (CMI cutoffs, MIPP). Then
        every group follows one curve keep_g(u) = f_g + (1 - f_g) u for u >= 0 and f_g (1 + u) for u < 0,
        with u in [-1, 1] solved so that the channel-weighted mean equals `keep_fraction`: at the
        criterion's own point all groups sit at f_g; beyond it, all shrink in proportion to f_g.
        """
        groups = self.prunable_groups
        alloc = self.criterion.allocation()
        if not alloc:
            return {g.root: keep_fraction for g in groups}
        f = {g.root: min(1.0, max(0.0, alloc.get(g.root, 1.0))) for g in groups}
        total = sum(g.original_channels for g in groups)

        def at(u: float) -> dict[str, float]:
            return {r: (fr + (1 - fr) * u) if u >= 0 else fr * (1 + u) for r, fr in f.items()}

        lo, hi = -1.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            mean = sum(at(mid)[g.root] * g.original_channels for g in groups) / total
            lo, hi = (mid, hi) if mean < keep_fraction else (lo, mid)
        return at((lo + hi) / 2)

    def prune_to(self, keep_fraction: float) -> int:
        """Prune the prunable groups to `keep_fraction` of the original channels overall; return channels removed."""
        fractions = self.keep_fractions(keep_fraction)
        keep = {g.root: self.target_channels(g, fractions[g.root]) for g in self.prunable_groups}
        return self.prune_counts({r: self.groups[r].channels - k for r, k in keep.items()})

    def prune_counts(self, remove: dict[str, int]) -> int:
        """Remove `remove[root]` channels (the lowest-scoring) from each group; return channels removed."""
        removed = 0
        for name, group in self._root_groups():
            info = self.groups.get(name)
            n_prune = remove.get(name, 0)
            if info is None or not info.prunable or n_prune <= 0:
                continue
            keep = info.channels - n_prune
            if keep < self.floor_of(info) or keep < 1:
                raise PruningError(f"refusing to prune {name} to {keep} channels (minimum {self.min_channels})")
            scores = self.criterion.scores(self, info, group)
            if scores is None or len(scores) != info.channels:
                raise PruningError(f"criterion gave no usable scores for group {name} "
                                   f"({None if scores is None else len(scores)} for {info.channels} channels)")
            if n_prune % info.divisor or info.channels % info.divisor:
                raise PruningError(f"{name}: {n_prune} of {info.channels} channels cannot go in equal numbers from "
                                   f"its {info.divisor} convolution groups")
            idxs = _lowest(scores.detach().cpu().double(), n_prune, info.divisor)
            pruning_group = self.graph.get_pruning_group(self._modules[name], group[0].dep.handler, idxs=idxs)
            if not self.graph.check_pruning_group(pruning_group):
                # Never skip silently: the group leaves the search and the report says why.
                info.prunable, info.reason = False, (f"Torch-Pruning refused to prune it to {keep} channels "
                                                     "(its check_pruning_group failed)")
                continue
            pruning_group.prune()
            dropped = set(idxs)
            info.kept = [k for i, k in enumerate(info.kept) if i not in dropped]
            info.channels = keep
            removed += n_prune
        self.verify()
        return removed

    def root_groups_by_name(self) -> dict:
        return dict(self._root_groups())

    def member_map(self) -> dict[str, tuple[list[str], list[str]]]:
        """Per group root: the layers losing output channels and the layers losing input channels."""
        layers = self._group_layers()
        return {r: (sorted({p for p, _, _ in prods}), [n for n, _, _ in layers.reads[r]])
                for r, prods in layers.producers.items()}

    def depth_blocks(self) -> dict[str, list[str]]:
        """Removable residual blocks -> the prunable groups that live entirely inside them."""
        from .depth import removable_blocks

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
        from .depth import remove_block

        for b in blocks:
            remove_block(self.model, b)
        groups = {k: g for k, g in self.groups.items() if not any(k.startswith(b + ".") for b in blocks)}
        new = ChannelPruner(self.model, self.example_input, self.criterion, self.channel_multiple, self.min_channels,
                            groups, analysed=True)
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
        handles = [m.register_forward_hook(lambda mod, i, o, n=n: order.append(n) if n not in order else None)
                   for n, m in self.model.named_modules() if isinstance(m, types)]
        try:
            _output_shapes(self.model, self.example_input)
        finally:
            for h in handles:
                h.remove()
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

    def _group_layers(self) -> _GroupLayers:
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
            self._layer_cache = (key, _GroupLayers(producers, reads))
        return self._layer_cache[1]

    def consumer_map(self) -> dict[str, list[tuple[str, list[int], list[int]]]]:
        """Per group root: the layers reading its channels, as (layer, its input channel idxs, the root's idxs)."""
        return self._group_layers().reads

    def at_minimum(self) -> bool:
        return all(self.target_channels(g, 0.0) >= g.channels for g in self.prunable_groups)

    def verify(self) -> None:
        """A pruned model must run and keep its output shape; anything else is a bug, never returned."""
        try:
            shapes = _output_shapes(self.model, self.example_input)
        except Exception as e:  # noqa: BLE001
            raise PruningError(f"the pruned model no longer runs ({type(e).__name__}: {e}); please report this model") from None
        if shapes != self._output_shape:
            raise PruningError(f"pruning changed the output shape {self._output_shape} -> {shapes}")


def _lowest(scores: torch.Tensor, n: int, parts: int) -> list[int]:
    """The n lowest-scoring channels; with parts > 1, the same positions in each of `parts` equal chunks."""
    if parts == 1:
        return torch.argsort(scores, stable=True)[:n].tolist()  # stable: equal scores, same choice every run
    size = len(scores) // parts
    positions = torch.argsort(scores.reshape(parts, size).sum(0), stable=True)[:n // parts].tolist()
    return sorted(p + k * size for k in range(parts) for p in positions)


def _randomise(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ROOT_TYPES):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / max(1, m.weight[0].numel()) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and m.track_running_stats:
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))


def _zero_out_channels(graph, group) -> None:
    """Make the group's channels exactly zero where they are produced (filters, biases, norm scale and shift)."""
    with torch.no_grad():
        for dep, idxs in group:
            m = dep.target.module
            if idxs and graph.is_out_channel_pruning_fn(dep.handler) and \
                    isinstance(m, ROOT_TYPES + (nn.modules.batchnorm._BatchNorm,)) and getattr(m, "weight", None) is not None:
                m.weight[list(idxs)] = 0
                if m.bias is not None:
                    m.bias[list(idxs)] = 0


def _outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = model(x)
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _output_shapes(model: nn.Module, x: torch.Tensor):
    with torch.no_grad():
        out = model(x)
    return tuple(t.shape for t in (out if isinstance(out, (tuple, list)) else (out,)))
