"""Per-channel features of a model's layers: each producer layer's output after its norm and activation.

The information methods score a channel by what it emits, i.e. after BatchNorm and the nonlinearity
(ALGORITHMS.md: "activations taken after the ReLU"). Models apply those as modules (nn.ReLU) or as
functions (F.relu), in place or not, so module hooks alone cannot find them. A TorchFunctionMode sees
every functional call: the output of a producer (conv/linear hook) is followed through an immediately
applied batch_norm and then an elementwise activation; the last stage reached is the feature. A
producer whose output goes elsewhere first (e.g. into a residual add) is taken after its norm, and the
stage is recorded ("conv", "norm" or "act").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

_NORMS = {"batch_norm"}
_ACTIVATIONS = {"relu", "relu_", "relu6", "hardtanh", "hardtanh_", "silu", "silu_", "gelu", "hardswish",
                "hardswish_", "leaky_relu", "leaky_relu_", "sigmoid", "sigmoid_", "elu", "elu_", "mish",
                "tanh", "tanh_", "softplus", "hardsigmoid", "clamp", "clamp_", "clip", "clip_", "selu"}
STAGES = ("conv", "norm", "act")
# Bytes of features a scoring pass holds at once (float32, all samples): layers beyond it are captured in
# further passes over the data (layer_chunks), which trades a forward pass for each such share.
FEATURE_BUDGET = 512 << 20


@dataclass
class Feature:
    tensor: torch.Tensor   # (N, C, *spatial)
    stage: str             # "conv", "norm" or "act": how far after the producer it was taken


def _in_place(fname: str) -> bool:
    return (fname.endswith("_") and not fname.startswith("__")) or fname.startswith("__i")


class _Follow(TorchFunctionMode):
    """Follows producer outputs through a norm and an activation applied directly to them."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[str, int, torch.Tensor]] = {}  # id(tensor) -> (layer, stage index, tensor)
        self.latest: dict[str, tuple[int, torch.Tensor]] = {}

    def track(self, name: str, stage: int, t: torch.Tensor) -> None:
        self.live[id(t)] = (name, stage, t)  # holding t keeps its id unique for this forward pass
        self.latest[name] = (stage, t)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        fname = getattr(func, "__name__", "")
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if first is not None and id(first) in self.live and fname not in _ACTIVATIONS and _in_place(fname):
            # e.g. `out += shortcut`: the op would change the captured tensor; keep its value from before
            name, stage, t = self.live.pop(id(first))
            if self.latest[name][1] is t:
                self.latest[name] = (stage, t.clone())
        out = func(*args, **(kwargs or {}))
        if first is not None and id(first) in self.live and isinstance(out, torch.Tensor):
            name, stage, _ = self.live[id(first)]
            if fname in _NORMS and stage == 0:
                self.track(name, 1, out)
            elif fname in _ACTIVATIONS and stage <= 1 and out.shape == args[0].shape:
                self.track(name, 2, out)
        return out


class FeatureCapture:
    """Context manager: run forward passes, get each named producer's feature per pass.

    `grad=True` keeps the features in the autograd graph (for gradient-based scores).
    """

    def __init__(self, model: nn.Module, layers: list[str], grad: bool = False):
        modules = dict(model.named_modules())
        missing = [n for n in layers if n not in modules]
        if missing:
            raise KeyError(f"no layer named {missing[0]!r} in the model")
        self.model, self.layers, self.grad = model, list(layers), grad
        self._modules = [(n, modules[n]) for n in layers]
        self._handles: list = []
        self._mode: _Follow | None = None

    def __enter__(self) -> "FeatureCapture":
        for name, module in self._modules:
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            if self._mode is not None and isinstance(output, torch.Tensor):
                self._mode.track(name, 0, output)
        return hook

    def run(self, x: torch.Tensor) -> dict[str, Feature]:
        """One forward pass on x; returns {layer: Feature} (and the model output as `self.output`)."""
        self._mode = _Follow()
        try:
            with self._mode, torch.set_grad_enabled(self.grad):
                self.output = self.model(x)
            got = self._mode.latest
        finally:
            self._mode = None
        missing = [n for n in self.layers if n not in got]
        if missing:
            raise RuntimeError(f"layer {missing[0]!r} did not run in the forward pass; it cannot be scored")
        return {n: Feature(got[n][1] if self.grad else got[n][1].detach(), STAGES[got[n][0]]) for n in self.layers}


def collect_features(model: nn.Module, x: torch.Tensor, layers: list[str], batch_size: int = 64,
                     dtype: torch.dtype = torch.float32) -> dict[str, Feature]:
    """Features of `layers` over all samples of x, concatenated along the batch (no gradients)."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    stages: dict[str, str] = {}
    try:
        with FeatureCapture(model, layers) as cap:
            for i in range(0, len(x), batch_size):
                for n, f in cap.run(x[i:i + batch_size]).items():
                    parts[n].append(f.tensor.to(dtype).clone())
                    stages[n] = f.stage
    finally:
        model.train(was_training)
    return {n: Feature(torch.cat(p), stages[n]) for n, p in parts.items()}


def feature_bytes(model: nn.Module, x1: torch.Tensor, layers: list[str]) -> dict[str, int]:
    """Bytes per sample (float32) of each layer's feature, from one forward pass on a single sample."""
    feats = collect_features(model, x1[:1], layers)
    return {n: f.tensor[0].numel() * 4 for n, f in feats.items()}


def layer_chunks(model: nn.Module, x: torch.Tensor, layers: list[str], budget: int = FEATURE_BUDGET) -> list[list[str]]:
    """`layers` in consecutive runs whose features over all of `x` fit in `budget` bytes (a layer larger
    than that on its own): one collect_features pass per run, so a pass holds one run's features, not
    every layer's. A layer's features are the same numbers whichever layers share its pass."""
    if len(layers) <= 1:
        return [list(layers)] if layers else []
    per_sample = feature_bytes(model, x, layers)
    chunks: list[list[str]] = [[]]
    held = 0
    for n in layers:
        size = per_sample[n] * len(x)
        if chunks[-1] and held + size > budget:
            chunks.append([])
            held = 0
        chunks[-1].append(n)
        held += size
    return chunks
