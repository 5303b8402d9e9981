"""Structural channel pruning through Torch-Pruning's dependency graph, made safe.

Every coupled group is first pruned on a copy of the model and the copy is run: a group whose pruning
breaks the forward pass or changes the output shape (e.g. the residual streams of ResNets with
zero-padding "option A" shortcuts, the classifier's outputs, ops the graph does not understand) is left
unpruned and reported with the reason. Channels are then removed for real, group by group, with kept
counts rounded to the device's channel multiple and never below its minimum.

Three structures need more than the graph gives. `torch.chunk` / `split` along the channels are traced as one
slice per part (Torch-Pruning's split node maps the parts of a tensor used twice, as in a YOLO C2f block, to the
wrong consumers); a chunked tensor is pruned as one group, the same positions from each part, so that chunk
still cuts it where the rest of the model expects. GroupNorm loses whole normalisation groups only (its
num_groups shrinks with them), so that its statistics over the remaining channels stay the same. Torch-Pruning
keeps per-op state (concatenation sizes, slice bounds) that pruning updates: every group is fetched afresh
before it is scored and pruned, and the graph is rebuilt after a group crossing a chunk or split.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch_pruning as tp
from torch.overrides import TorchFunctionMode

from .criteria import Criterion, TorchPruningCriterion
from .errors import PruningError

ROOT_TYPES = (nn.Conv2d, nn.Conv1d, nn.Linear)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
_SPLIT_FUNCS = {torch.Tensor.chunk: "chunk", torch.chunk: "chunk", torch.Tensor.split: "split",
                torch.functional.split: "split", torch.Tensor.split_with_sizes: "split",
                torch.split_with_sizes: "split"}
_CAT_FUNCS = {torch.cat, torch.concat, torch.concatenate}
_VIEW_FUNCS = {torch.Tensor.view, torch.Tensor.reshape, torch.reshape, torch.Tensor.unflatten}


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
    divisor: int = 1           # grouped convs / chunk parts: channels go at the same positions from each part
    block: int = 1             # GroupNorm: channels go in whole normalisation groups of `block` (within each part)
    chunks: int = 1            # torch.chunk parts (in divisor): each part is a layer's width, rounded on its own

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
        self.graph = _build_graph(self.model, self.example_input)
        if not self.analysed:
            self._analyse()

    def for_copy(self, model: nn.Module, criterion=None) -> "ChannelPruner":
        """A pruner for a deep copy of this pruner's model, reusing the (costly) safety analysis."""
        groups = {k: dataclasses.replace(g, kept=list(g.kept), members=list(g.members)) for k, g in self.groups.items()}
        return ChannelPruner(model, self.example_input, criterion or self.criterion, self.channel_multiple,
                             self.min_channels, groups, analysed=True)

    # -- analysis -----------------------------------------------------------------------------------

    def _root_groups(self) -> list[tuple[str, tp.dependency.Group]]:
        return [(self._names[root], group) for root, group in _all_groups(self.graph)]

    def _group(self, name: str) -> tp.dependency.Group:
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
            divisor, block, chunks, problem = _structure(self.graph, group, self._names)
            info = GroupInfo(name, n, n, members, divisor=divisor, block=block, chunks=chunks)
            if problem:
                info.prunable, info.reason = False, problem
            elif n <= divisor * block:
                info.prunable, info.reason = False, _unit_reason(n, divisor, block)
            elif n <= self.floor_of(info) or n < 2:
                per = f" ({n // chunks} in each of its {chunks} torch.chunk parts)" if chunks > 1 else ""
                info.prunable, info.reason = False, f"{n} channels{per}: already at the minimum of {self.min_channels}"
            else:
                problem = self._trial(name, group[0].dep.handler, _pattern(n, divisor, block))
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
        _randomise(trial)
        graph = _build_graph(trial, self.example_input)
        module = dict(trial.named_modules())[root]
        group = None
        try:
            group = graph.get_pruning_group(module, handler, idxs=idxs)
            _zero_out_channels(graph, group)
            reference = _outputs(trial, self.example_input)
            _prune_group(group)
            outputs = _outputs(trial, self.example_input)
        except _StructureError as e:
            return str(e)
        except Exception as e:  # noqa: BLE001 - any failure means this group cannot be pruned safely
            where = _suspects(group) if group is not None else ""
            return (f"pruning it breaks the forward pass ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
                    + (f"; the group crosses {where}" if where else ""))
        shapes = tuple(t.shape for t in outputs)
        if shapes != self._output_shape:
            return f"pruning it changes the model's output shape {self._output_shape} -> {shapes}"
        for ref, out in zip(reference, outputs):
            if not torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()) + 1e-6):
                where = _suspects(group) or "an op whose channel mapping the dependency graph does not know"
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
        for name in list(self.groups):
            info = self.groups[name]
            n_prune = remove.get(name, 0)
            if not info.prunable or n_prune <= 0:
                continue
            keep = info.channels - n_prune
            if keep < self.floor_of(info) or keep < 1:
                raise PruningError(f"refusing to prune {name} to {keep} channels (minimum {self.min_channels})")
            unit = info.divisor * info.block
            if n_prune % unit or info.channels % unit:
                raise PruningError(f"{name}: {n_prune} of {info.channels} channels cannot go in "
                                   f"{_unit_words(info.divisor, info.block)}")
            group = self._group(name)   # afresh: earlier groups may have moved its indices
            scores = self.criterion.scores(self, info, group)
            if scores is None or len(scores) != info.channels:
                raise PruningError(f"criterion gave no usable scores for group {name} "
                                   f"({None if scores is None else len(scores)} for {info.channels} channels)")
            idxs = _lowest(scores.detach().cpu().double(), n_prune, info.divisor, info.block)
            pruning_group = self.graph.get_pruning_group(self._modules[name], group[0].dep.handler, idxs=idxs)
            if not self.graph.check_pruning_group(pruning_group):
                # Never skip silently: the group leaves the search and the report says why.
                info.prunable, info.reason = False, (f"Torch-Pruning refused to prune it to {keep} channels "
                                                     "(its check_pruning_group failed)")
                continue
            try:
                _prune_group(pruning_group)   # checks GroupNorms before anything is pruned
            except _StructureError as e:
                info.prunable, info.reason = False, str(e)
                continue
            dropped = set(idxs)
            info.kept = [k for i, k in enumerate(info.kept) if i not in dropped]
            info.channels = keep
            removed += n_prune
            if _crosses_slices(pruning_group):   # Torch-Pruning's slice bounds are not updated exactly: rebuild
                self.graph = _build_graph(self.model, self.example_input)
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


def _lowest(scores: torch.Tensor, n: int, parts: int, block: int = 1) -> list[int]:
    """The n lowest-scoring channels; with parts > 1, the same positions in each of `parts` equal chunks; with
    block > 1, whole aligned blocks of `block` channels (within each chunk), by their summed score."""
    if parts == 1 and block == 1:
        return torch.argsort(scores, stable=True)[:n].tolist()  # stable: equal scores, same choice every run
    size = len(scores) // parts
    units = scores.reshape(parts, size // block, block).sum((0, 2))
    chosen = torch.argsort(units, stable=True)[:n // (parts * block)].tolist()
    return sorted(k * size + u * block + i for k in range(parts) for u in chosen for i in range(block))


def _pattern(n: int, parts: int, block: int) -> list[int]:
    """Trial channels: every other unit (a GroupNorm group, else one channel) at the same positions in each part."""
    size = n // parts
    return sorted(k * size + u * block + i for k in range(parts) for u in range(0, size // block, 2)
                  for i in range(block))


def _unit_words(parts: int, block: int) -> str:
    words = []
    if parts > 1:
        words.append(f"equal numbers from each of its {parts} parts (grouped convolutions, torch.chunk)")
    if block > 1:
        words.append(f"whole GroupNorm groups of {block} channels")
    return " and ".join(words) or "single channels"


def _unit_reason(n: int, parts: int, block: int) -> str:
    if block > 1 and parts == 1:
        return f"GroupNorm: its {n} channels are a single normalisation group, whose statistics change with any channel removed"
    return f"{n} channels: it can only lose {_unit_words(parts, block)}, and that would leave none"


class _StructureError(Exception):
    """A group whose structure makes pruning it inexact; the message is the reason given to the user."""


class _SplitsAsSlices(TorchFunctionMode):
    """While the graph is traced: torch.chunk / split along the channels as one slice per part, recorded.

    Torch-Pruning traces a split as one node whose outputs it maps to parts in the order it meets their
    consumers, which is wrong when a part is used twice (C2f: `y = list(x.chunk(2, 1)); y.append(m(y[-1]))`).
    A slice per part is one node per part, with its own exact index mapping."""

    def __init__(self):
        super().__init__()
        self.parts: dict = {}   # the slice's grad_fn -> (kind "chunk" / "split", number of parts, part size)
        self.cats: dict = {}    # a channel concatenation's grad_fn -> the channels of its inputs
        self.views: set = set()  # grad_fns of views that split the channel dimension (a channel shuffle)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = _SPLIT_FUNCS.get(func)
        if func in _CAT_FUNCS:   # Torch-Pruning infers the sizes from the graph, and cannot through a slice
            out = func(*args, **kwargs)
            tensors = list(args[0] if args else kwargs.get("tensors", ()))
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            if isinstance(out, torch.Tensor) and out.dim() >= 2 and dim % out.dim() == 1 and out.grad_fn is not None:
                self.cats[out.grad_fn] = [t.shape[1] for t in tensors]
            return out
        if func in _VIEW_FUNCS:
            out, x = func(*args, **kwargs), args[0]
            if isinstance(out, torch.Tensor) and isinstance(x, torch.Tensor) and x.dim() >= 3 and \
                    out.dim() > x.dim() and out.shape[1] != x.shape[1] and out.grad_fn is not None:
                self.views.add(out.grad_fn)
            return out
        if kind is None:
            return func(*args, **kwargs)
        x, how = args[0], (args[1] if len(args) > 1 else kwargs.get("chunks", kwargs.get("split_size",
                            kwargs.get("split_size_or_sections", kwargs.get("split_sizes")))))
        dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or dim % x.dim() != 1 or not x.requires_grad:
            return func(*args, **kwargs)
        c = x.shape[1]
        if kind == "chunk":
            step = -(-c // int(how))
            sizes = [min(step, c - a) for a in range(0, c, step)]
        else:
            sizes = [int(how)] * (c // int(how)) + ([c % int(how)] if c % int(how) else []) \
                if isinstance(how, int) else [int(v) for v in how]
        out, start = [], 0
        for size in sizes:
            part = x[:, start:start + size]
            equal = kind == "chunk" and all(v == sizes[0] for v in sizes)
            self.parts[part.grad_fn] = (kind if equal else "split", len(sizes), size)
            out.append(part)
            start += size
        return tuple(out)


def _build_graph(model: nn.Module, x: torch.Tensor) -> tp.DependencyGraph:
    mode = _SplitsAsSlices()
    with mode:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    graph.compress_splits = mode.parts
    graph.compress_barriers = set()
    for node in graph.module2node.values():
        if node.type == tp.ops.OPTYPE.CONCAT and node.grad_fn in mode.cats:
            node.module.concat_sizes = list(mode.cats[node.grad_fn])
        elif node.type == tp.ops.OPTYPE.RESHAPE and node.grad_fn in mode.views:
            # Splitting the channel dimension (a channel shuffle) is no channel mapping Torch-Pruning knows; its
            # flatten mapping multiplies the indices at every shuffle (exponentially, in ShuffleNetV2). A group
            # ends at such a view (and its trial then fails): the node is opaque and maps to nothing beyond.
            node.type = tp.ops.OPTYPE.ELEMENTWISE   # Torch-Pruning re-derives mappings of reshape nodes only
            graph.compress_barriers.add(node)
            for dep in node.dependencies:
                dep.index_mapping = [_no_channels, _no_channels]
    return graph


def _no_channels(idxs):
    return []


def _all_groups(graph) -> list[tuple[nn.Module, tp.dependency.Group]]:
    """Torch-Pruning's groups by output channels, rooted where a layer's channels are all in the group.

    Torch-Pruning roots a group at the first layer it meets; when that group holds only part of another
    layer's channels through a torch.chunk, the rest of that layer would never be pruned: the group is then
    rooted at that layer instead (all its parts in one group)."""
    visited, out = set(), []
    for m in list(graph.module2node):
        if not isinstance(m, ROOT_TYPES) or m in visited:
            continue
        pruner = graph.get_pruner_of_module(m)
        if pruner is None or pruner.get_out_channels(m) is None:
            continue
        group = graph.get_pruning_group(m, pruner.prune_out_channels, list(range(pruner.get_out_channels(m))))
        for _ in range(8):
            partial = [d.target.module for d, idxs in group
                       if graph.is_out_channel_pruning_fn(d.handler) and isinstance(d.target.module, ROOT_TYPES)
                       and len(set(idxs)) < graph.get_out_channels(d.target.module)]
            if not partial or partial[0] in visited or \
                    not any(d.target.grad_fn in graph.compress_splits for d, _ in group):
                break
            m = partial[0]
            group = graph.get_pruning_group(m, graph.get_pruner_of_module(m).prune_out_channels,
                                            list(range(graph.get_out_channels(m))))
        if not graph.is_out_channel_pruning_fn(group[0].dep.handler):
            continue
        visited |= {d.target.module for d, _ in group if graph.is_out_channel_pruning_fn(d.handler)}
        out.append((m, group))
    return out


def _structure(graph, group, names: dict) -> tuple[int, int, int, str]:
    """(parts, GroupNorm block, chunk parts, problem) of a group: the granularity its channels must go in, or
    why they cannot.

    parts: grouped convolutions (channels go at the same positions from each conv group) and torch.chunk
    (equal numbers from each part, so that chunk still cuts where the rest of the model expects).
    block: GroupNorm's channels per normalisation group (whole groups go, aligned in the root's channels)."""
    n = len(group[0].idxs)
    parts, block, chunked = 1, 1, 1
    chunks: dict = {}   # (split op, its parts, part size) -> root channels seen in it
    for item in group:
        dep, idxs = item.dep, item.idxs
        m, root_idxs = dep.target.module, list(item.root_idxs)
        if isinstance(m, nn.modules.conv._ConvNd) and 1 < m.groups < max(m.in_channels, m.out_channels):
            parts = math.lcm(parts, m.groups)
        if dep.target in graph.compress_barriers:
            return 1, 1, 1, ("its channels go through a view that splits the channel dimension (a channel shuffle), "
                             "across which the dependency graph cannot map them")
        split = graph.compress_splits.get(dep.target.grad_fn) if dep.target.type == tp.ops.OPTYPE.SLICE else None
        if split is not None:
            kind, count, size = split
            if kind != "chunk":
                return 1, 1, 1, ("its channels go through torch.split at fixed sizes (or a chunk of unequal parts): "
                                 "pruning them would move the split points the model's code fixes")
            start = dep.target.module.start
            chunks.setdefault((dep.target.grad_fn.next_functions[0][0], count, size), {})[start // size] = \
                (list(idxs), root_idxs)
        if isinstance(m, nn.GroupNorm):
            per = m.num_channels // m.num_groups
            offsets = {g - r for g, r in zip(idxs, root_idxs)}
            if len(offsets) != 1 or next(iter(offsets)) % per or n % per or len(set(idxs)) != n:
                return 1, 1, 1, (f"GroupNorm: {names.get(m, 'a GroupNorm')}'s groups of {per} channels do not line "
                                 "up with this group's channels; removing part of a group changes its statistics")
            block = math.lcm(block, per)
    for (_, count, size), seen in chunks.items():
        whole = len(seen) == count and count * size == n and all(
            len(i) == size and r == [j * size + k for k in i] for j, (i, r) in seen.items())
        if not whole:
            return 1, 1, 1, (f"its channels are only some of a torch.chunk's {count} parts: pruning them alone "
                             "would change where the chunk cuts")
        parts, chunked = math.lcm(parts, count), math.lcm(chunked, count)
    if n % parts or (n // parts) % block:
        return 1, 1, 1, (f"GroupNorm: its groups of {block} channels straddle the {parts} parts of a grouped "
                         "convolution or torch.chunk")
    return parts, block, chunked, ""


def _prune_group(group) -> None:
    """Prune a Torch-Pruning group; GroupNorms lose whole groups and their num_groups with them."""
    norms = {}
    for dep, idxs in group:
        m = dep.target.module
        if isinstance(m, nn.GroupNorm) and m not in norms:
            per = m.num_channels // m.num_groups
            gone = set(idxs)
            if any(len(gone & set(range(g * per, (g + 1) * per))) not in (0, per) for g in range(m.num_groups)):
                raise _StructureError(f"GroupNorm: the channels would not go in whole normalisation groups of {per}")
            norms[m] = per
    group.prune()
    for m, per in norms.items():
        m.num_groups = m.num_channels // per


def _crosses_slices(group) -> bool:
    """Whether a group crosses a split or a slice of the channels (whose bounds pruning leaves stale)."""
    return any(dep.target.type in (tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.UNBIND) or
               (dep.target.type == tp.ops.OPTYPE.SLICE and dep.target.module.dim == 1) for dep, _ in group)


def _suspects(group) -> str:
    """The ops in a group whose channel mapping Torch-Pruning may get wrong, in words."""
    found = []
    for dep, _ in group:
        node = dep.target
        name = (getattr(node.module, "_grad_fn", "") or "") if node.type == tp.ops.OPTYPE.ELEMENTWISE else ""
        if node in getattr(group._DG, "compress_barriers", ()) or node.type == tp.ops.OPTYPE.RESHAPE:
            found.append("a reshape or view of the channels (e.g. a channel shuffle)")
        elif "pad" in str(name).lower():
            found.append("a zero-padding op (e.g. an option-A shortcut)")
        elif node.type in (tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.UNBIND) or \
                (node.type == tp.ops.OPTYPE.SLICE and node.module.dim == 1):
            found.append("a split or slice of the channels")
        elif node.type == tp.ops.OPTYPE.EXPAND:
            found.append("an expand of the channels")
        elif isinstance(node.module, (nn.LayerNorm,)):
            found.append("a LayerNorm")
    return ", ".join(dict.fromkeys(found))


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
            elif isinstance(m, (nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)) and m.affine:
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)


def _zero_out_channels(graph, group) -> None:
    """Make the group's channels exactly zero where they are produced (filters, biases, norm scale and shift)."""
    with torch.no_grad():
        for dep, idxs in group:
            m = dep.target.module
            if idxs and graph.is_out_channel_pruning_fn(dep.handler) and \
                    isinstance(m, ROOT_TYPES + NORMS) and getattr(m, "weight", None) is not None:
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
