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
import torch_pruning as tp

from ..archs.resnet_cifar import PadShortcut, pad_of, stateless_leaf
from ..hooked_pass import hooked_pass


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


def convert_pad_shortcuts(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Replace the user's option-A shortcut modules by PadShortcuts (in place); the names replaced."""
    shapes: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}

    def hook(name):
        def fn(mod, inputs, output):
            calls[name] = calls.get(name, 0) + 1
            if len(inputs) == 1 and isinstance(inputs[0], torch.Tensor):
                shapes[name] = tuple(inputs[0].shape)
        return fn

    candidates = [(m, hook(name)) for name, m in model.named_modules()
                  if name and stateless_leaf(m) and not type(m).__module__.startswith("torch.")
                  and not isinstance(m, PadShortcut)]
    if not candidates:
        return []
    hooked_pass(model, example_input, candidates)
    replaced = []
    for name, shape in shapes.items():
        module = model.get_submodule(name)
        pad = pad_of(module, shape) if calls[name] == 1 else None   # a module run twice may see two shapes
        if pad is not None:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, PadShortcut(shape[1], pad).to(example_input.device))
            replaced.append(name)
    return replaced
