"""The structures that need more than the dependency graph gives, and the checks that find them.

A group's granularity (grouped convolutions and torch.chunk parts lose channels at the same positions in
each part; GroupNorm loses whole normalisation groups, and its num_groups shrinks with them), the
channels that go (the lowest-scoring units), and the trial that proves pruning a group is exactly
removing its channels (random weights, channels zeroed, then pruned: both outputs must agree).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch_pruning as tp

from ..archs.resnet_cifar import PadShortcut
from .graph import NORMS, ROOT_TYPES

def lowest_units(scores: torch.Tensor, n: int, parts: int, block: int = 1) -> list[int]:
    """The n lowest-scoring channels; with parts > 1, the same positions in each of `parts` equal chunks; with
    block > 1, whole aligned blocks of `block` channels (within each chunk), by their summed score."""
    if parts == 1 and block == 1:
        return torch.argsort(scores, stable=True)[:n].tolist()  # stable: equal scores, same choice every run
    size = len(scores) // parts
    units = scores.reshape(parts, size // block, block).sum((0, 2))
    chosen = torch.argsort(units, stable=True)[:n // (parts * block)].tolist()
    return sorted(k * size + u * block + i for k in range(parts) for u in chosen for i in range(block))


def trial_pattern(n: int, parts: int, block: int) -> list[int]:
    """Trial channels: every other unit (a GroupNorm group, else one channel) at the same positions in each part."""
    size = n // parts
    return sorted(k * size + u * block + i for k in range(parts) for u in range(0, size // block, 2)
                  for i in range(block))


def unit_words(parts: int, block: int) -> str:
    words = []
    if parts > 1:
        words.append(f"equal numbers from each of its {parts} parts (grouped convolutions, torch.chunk)")
    if block > 1:
        words.append(f"whole GroupNorm groups of {block} channels")
    return " and ".join(words) or "single channels"


def unit_reason(n: int, parts: int, block: int) -> str:
    if block > 1 and parts == 1:
        return f"GroupNorm: its {n} channels are a single normalisation group, whose statistics change with any channel removed"
    return f"{n} channels: it can only lose {unit_words(parts, block)}, and that would leave none"


class StructureError(Exception):
    """A group whose structure makes pruning it inexact; the message is the reason given to the user."""


def structure_of(graph, group, names: dict) -> tuple[int, int, int, str]:
    """(parts, GroupNorm block, chunk parts, problem) of a group: the granularity its channels must go in, or
    why they cannot.

    parts: grouped convolutions (channels go at the same positions from each conv group) and torch.chunk
    (equal numbers from each part, so that chunk still cuts where the rest of the model expects).
    block: GroupNorm's channels per normalisation group (whole groups go, aligned in the root's channels)."""
    n = len(group[0].idxs)
    if reaches_output(graph, group):
        return 1, 1, 1, (f"its {n} channels are the model's outputs (or are concatenated into them): pruning them "
                         "would change the output shape")
    parts, block, chunked = 1, 1, 1
    chunks: dict = {}   # (split op, its parts, part size) -> root channels seen in it
    for item in group:
        dep, idxs = item.dep, item.idxs
        m, root_idxs = dep.target.module, list(item.root_idxs)
        if isinstance(m, nn.LayerNorm):
            return 1, 1, 1, (f"LayerNorm: {names.get(m, 'a LayerNorm')} normalises over these channels together, so "
                             "removing any changes the mean and variance the others are normalised with")
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


def reaches_output(graph, group) -> bool:
    """Whether the group's channels are (part of) a model output: a layer or op in the group that nothing reads
    (the classifier, a detection head's concatenation). The trial would catch it too, but as whatever error the
    stale output mapping raises first, not as the reason."""
    out_nodes = {node for node in graph.module2node.values() if not node.outputs}
    return any(dep.target in out_nodes and (graph.is_out_channel_pruning_fn(dep.handler)   # a layer producing them
                                            or not isinstance(dep.target.module, ROOT_TYPES))  # an op passing them
               for dep, _ in group)


def prune_group(group) -> None:
    """Prune a Torch-Pruning group; GroupNorms lose whole groups and their num_groups with them."""
    norms = {}
    for dep, idxs in group:
        m = dep.target.module
        if isinstance(m, nn.GroupNorm) and m not in norms:
            per = m.num_channels // m.num_groups
            gone = set(idxs)
            if any(len(gone & set(range(g * per, (g + 1) * per))) not in (0, per) for g in range(m.num_groups)):
                raise StructureError(f"GroupNorm: the channels would not go in whole normalisation groups of {per}")
            norms[m] = per
    group.prune()
    for m, per in norms.items():
        m.num_groups = m.num_channels // per


def crosses_slices(group) -> bool:
    """Whether a group crosses a split or a slice of the channels (whose bounds pruning leaves stale)."""
    return any(dep.target.type in (tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.UNBIND) or
               (dep.target.type == tp.ops.OPTYPE.SLICE and dep.target.module.dim == 1) for dep, _ in group)


def suspects(group) -> str:
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


def randomise(model: nn.Module) -> None:
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
            elif not isinstance(m, ROOT_TYPES + NORMS + (nn.LayerNorm,)):
                # Loose parameters (ConvNeXt's layer scales, 1e-6 at initialisation) at trained-like magnitudes:
                # at 1e-6 a block's branch is invisible in the outputs and its trial proves nothing.
                for p in m.parameters(recurse=False):
                    p.copy_(0.5 + torch.rand(p.shape, generator=g))


def zero_out_channels(graph, group) -> None:
    """Make the group's channels exactly zero where they are produced (filters, biases, norm scale and shift)."""
    with torch.no_grad():
        for dep, idxs in group:
            m = dep.target.module
            if idxs and graph.is_out_channel_pruning_fn(dep.handler) and \
                    isinstance(m, ROOT_TYPES + NORMS) and getattr(m, "weight", None) is not None:
                m.weight[list(idxs)] = 0
                if m.bias is not None:
                    m.bias[list(idxs)] = 0
            elif idxs and graph.is_out_channel_pruning_fn(dep.handler) and isinstance(m, PadShortcut):
                m.zero_outputs(idxs)   # the positions it feeds into the stream


def model_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = model(x)
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def output_shapes(model: nn.Module, x: torch.Tensor):
    with torch.no_grad():
        out = model(x)
    return tuple(t.shape for t in (out if isinstance(out, (tuple, list)) else (out,)))
