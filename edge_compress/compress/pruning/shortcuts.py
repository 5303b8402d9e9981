"""Zero-padding ("option A") shortcuts as layers with their own input and output channels.

Torch-Pruning sees `F.pad(x[:, :, ::2, ::2], ...)` as an element-wise op and couples the stream before it
with the wider stream after it, with the indices shifted by the pad: pruning that group is never exact.
As a `PadShortcut` (compress/archs/resnet_cifar.py), the shortcut is a layer with a channel map, and
Torch-Pruning prunes its inputs with the stream before it and its outputs with the stream after it, each
stream its own group. A user's shortcut module (akamaster's `LambdaLayer(lambda x: F.pad(...))`) becomes a
`PadShortcut` only when it computes exactly that on the model's own input shape and on random inputs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from ..archs.resnet_cifar import PadShortcut


class PadShortcutPruner(tp.pruner.function.BasePruningFunc):
    """Input channels and output positions of a PadShortcut are pruned apart (no intra-layer coupling)."""

    def prune_out_channels(self, layer: PadShortcut, idxs) -> PadShortcut:
        layer.drop_outputs(idxs)
        return layer

    def prune_in_channels(self, layer: PadShortcut, idxs) -> PadShortcut:
        layer.drop_inputs(idxs)
        return layer

    def get_out_channels(self, layer: PadShortcut) -> int:
        return layer.out_channels

    def get_in_channels(self, layer: PadShortcut) -> int:
        return layer.in_channels


def customized_pruners() -> dict:
    return {PadShortcut: PadShortcutPruner()}


def _stateless_leaf(m: nn.Module) -> bool:
    return not list(m.children()) and not list(m.parameters(recurse=False)) and not list(m.buffers(recurse=False))


def pad_of(module: nn.Module, shape: tuple[int, ...], trials: int = 2) -> int | None:
    """The pad p if `module` computes F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p)) on inputs of `shape`, else None.

    Only a user's parameterless leaf module qualifies (torch's own layers never do), and it must agree on
    random inputs of both signs: a module that only looks like the shortcut is left as it is."""
    if isinstance(module, PadShortcut) or type(module).__module__.startswith("torch.") or not _stateless_leaf(module) \
            or len(shape) != 4:
        return None
    g = torch.Generator().manual_seed(0)
    pad = None
    for _ in range(trials):
        x = torch.randn(shape, generator=g)
        try:
            with torch.no_grad():
                y = module(x.clone())
        except Exception:  # noqa: BLE001 - a module that fails on its own input shape is not the shortcut
            return None
        if not isinstance(y, torch.Tensor) or y.dim() != 4 or (y.shape[1] - shape[1]) % 2 or y.shape[1] < shape[1]:
            return None
        p = (y.shape[1] - shape[1]) // 2
        expected = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p))
        if pad not in (None, p) or y.shape != expected.shape or not torch.equal(y, expected):
            return None
        pad = p
    return pad


def convert_pad_shortcuts(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Replace the user's option-A shortcut modules by PadShortcuts (in place); the names replaced."""
    shapes: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}
    handles = []
    for name, m in model.named_modules():
        if name and _stateless_leaf(m) and not type(m).__module__.startswith("torch.") and not isinstance(m, PadShortcut):
            def hook(mod, inputs, output, name=name):
                calls[name] = calls.get(name, 0) + 1
                if len(inputs) == 1 and isinstance(inputs[0], torch.Tensor):
                    shapes[name] = tuple(inputs[0].shape)
            handles.append(m.register_forward_hook(hook))
    if not handles:
        return []
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    replaced = []
    for name, shape in shapes.items():
        module = model.get_submodule(name)
        pad = pad_of(module, shape) if calls[name] == 1 else None   # a module run twice may see two shapes
        if pad is not None:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, PadShortcut(shape[1], pad).to(example_input.device))
            replaced.append(name)
    return replaced
