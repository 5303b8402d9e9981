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
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch_pruning as tp

from .criteria import Criterion, TorchPruningCriterion
from .errors import PruningError

ROOT_TYPES = (nn.Conv2d, nn.Conv1d, nn.Linear)


@dataclass
class GroupInfo:
    root: str                  # name of the layer whose output channels define the group
    original_channels: int
    channels: int              # current
    members: list[str]         # every layer the group touches
    prunable: bool = True
    reason: str = ""           # why it is left unpruned
    kept: list[int] = field(default_factory=list)  # original channel indices still present, in order

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
            info = GroupInfo(name, n, n, members)
            floor = min(self.min_channels, n)
            if n <= floor or n < 2:
                info.prunable, info.reason = False, f"{n} channels: already at the minimum of {self.min_channels}"
            else:
                problem = self._trial(name, group[0].dep.handler, n)
                if problem:
                    info.prunable, info.reason = False, problem
            self.groups[name] = info

    def _trial(self, root: str, handler, n: int) -> str:
        """Prune half of the group on a copy and run it; return what broke, or '' if nothing did."""
        trial = copy.deepcopy(self.model)
        graph = tp.DependencyGraph().build_dependency(trial, example_inputs=self.example_input)
        module = dict(trial.named_modules())[root]
        try:
            graph.get_pruning_group(module, handler, idxs=list(range(0, n, 2))).prune()
            shapes = _output_shapes(trial, self.example_input)
        except Exception as e:  # noqa: BLE001 - any failure means this group cannot be pruned safely
            return f"pruning it breaks the forward pass ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
        if shapes != self._output_shape:
            return f"pruning it changes the model's output shape {self._output_shape} -> {shapes}"
        return ""

    @property
    def prunable_groups(self) -> list[GroupInfo]:
        return [g for g in self.groups.values() if g.prunable]

    # -- pruning ------------------------------------------------------------------------------------

    def target_channels(self, info: GroupInfo, keep_fraction: float) -> int:
        """Channels to keep for a keep fraction of the original: rounded to the multiple, >= the minimum."""
        floor = min(self.min_channels, info.original_channels)
        want = info.original_channels * keep_fraction
        mult = self.channel_multiple
        rounded = int(round(want / mult)) * mult if mult > 1 else int(round(want))
        return max(floor, min(info.channels, rounded))

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
        removed = 0
        fractions = self.keep_fractions(keep_fraction)
        for name, group in self._root_groups():
            info = self.groups.get(name)
            if info is None or not info.prunable:
                continue
            keep = self.target_channels(info, fractions[name])
            n_prune = info.channels - keep
            if n_prune <= 0:
                continue
            scores = self.criterion.scores(self, info, group)
            if scores is None or len(scores) != info.channels:
                raise PruningError(f"criterion gave no usable scores for group {name} "
                                   f"({None if scores is None else len(scores)} for {info.channels} channels)")
            # Stable sort so equal scores prune the same channels on every run.
            idxs = torch.argsort(scores.detach().cpu().double(), stable=True)[:n_prune].tolist()
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
        """`producers` of every group, from one traversal of the dependency graph (cached per channel count)."""
        key = tuple(g.channels for g in self.groups.values())
        if getattr(self, "_producer_cache", (None,))[0] != key:
            out = {}
            for name, group in self._root_groups():
                out[name] = [(self._names[dep.target.module], list(idxs), list(group[i].root_idxs))
                             for i, (dep, idxs) in enumerate(group)
                             if isinstance(dep.target.module, ROOT_TYPES)
                             and self.graph.is_out_channel_pruning_fn(dep.handler)]
            self._producer_cache = (key, out)
        return self._producer_cache[1]

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


def _output_shapes(model: nn.Module, x: torch.Tensor):
    with torch.no_grad():
        out = model(x)
    return tuple(t.shape for t in (out if isinstance(out, (tuple, list)) else (out,)))
