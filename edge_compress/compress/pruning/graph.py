"""Torch-Pruning's dependency graph, traced so that the structures it gets wrong are mapped right.

`torch.chunk` / `split` along the channels are traced as one slice per part (Torch-Pruning's split node maps
the parts of a tensor used twice, as in a YOLO C2f block, to the wrong consumers); concatenations record
their inputs' sizes; a view that splits the channel dimension (a channel shuffle) is a barrier no group
crosses; an option-A shortcut is a layer of its own (compress/pruning/shortcuts.py). `all_groups` lists
the coupled groups, each rooted where a layer's channels are all in it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp
from torch.overrides import TorchFunctionMode

from .shortcuts import customized_pruners

ROOT_TYPES = (nn.Conv2d, nn.Conv1d, nn.Linear)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
_SPLIT_FUNCS = {torch.Tensor.chunk: "chunk", torch.chunk: "chunk", torch.Tensor.split: "split",
                torch.functional.split: "split", torch.Tensor.split_with_sizes: "split",
                torch.split_with_sizes: "split"}
_CAT_FUNCS = {torch.cat, torch.concat, torch.concatenate}
_VIEW_FUNCS = {torch.Tensor.view, torch.Tensor.reshape, torch.reshape, torch.Tensor.unflatten}


class SplitsAsSlices(TorchFunctionMode):
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


def build_graph(model: nn.Module, x: torch.Tensor) -> tp.DependencyGraph:
    mode = SplitsAsSlices()
    with mode:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=x, customized_pruners=customized_pruners())
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


def all_groups(graph) -> list[tuple[nn.Module, tp.dependency.Group]]:
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
