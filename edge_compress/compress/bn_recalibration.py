"""Re-estimate BatchNorm statistics after pruning.

Removing channels changes what every later layer sees, so the running means and variances stored in
BatchNorm no longer match; a few hundred real samples through the network in train mode (BatchNorm
only; dropout stays off) restore them. Never run on synthetic data: noise statistics would replace
the real ones.

The statistics are a function of the model's weights, its structure and the data alone (the running
statistics are reset first, and BatchNorm in train mode normalises with each batch's own), so a model
re-estimated again on the same data with nothing changed in between gets the statistics it already
had: they are restored from the last run instead of recomputed (a pass over the data saved, e.g. the
final re-estimation after a search whose last round already did it).
"""
from __future__ import annotations

import math
import weakref

import torch
import torch.nn as nn

from .metrics.memory import release_free_memory

_STATS = ("running_mean", "running_var", "num_batches_tracked")
# The images one re-estimation reads: at most this many input pixels (1024 CIFAR images), and at least
# MIN_IMAGES. A 224x224 image gives every channel ~50x the positions of a 32x32 one, so 64 of them estimate a
# mean and variance as well as 1024 CIFAR images do, and the search re-estimates after every round: on all
# of 256 calibration images at 224 that alone was several forward passes of the compile.
MAX_PIXELS = 1024 * 32 * 32
MIN_IMAGES = 64
# model -> (fingerprint of what the statistics depend on, the statistics the last run left)
_LAST: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, list[tuple]]]" = weakref.WeakKeyDictionary()


def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> int:
    """Replace running statistics with the exact average over `images_read(x)` samples of `x`, evenly spaced
    (calibration sets are often stored class by class: a prefix would be a few classes); return the number of
    BN layers."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    n = images_read(x)
    if n < len(x):
        x = x[torch.arange(n) * len(x) // n]
    if not bns or len(x) < 2:
        return 0
    key = _fingerprint(model, x, batch_size)
    last = _LAST.get(model)
    if last is not None and last[0] == key:
        with torch.no_grad():
            for m, saved in zip(bns, last[1]):
                for name, value in zip(_STATS, saved):
                    if getattr(m, name, None) is not None and value is not None:
                        getattr(m, name).copy_(value)
        return len(bns)
    saved = [(m, m.momentum, m.training) for m in bns]
    was_training = model.training
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches instead of an exponential one
        m.train()
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                chunk = x[i:i + batch_size]
                if len(chunk) >= 2:  # BatchNorm cannot use a batch of one in train mode
                    model(chunk)
    except BaseException:
        _LAST.pop(model, None)
        raise
    finally:
        for m, momentum, training in saved:
            m.momentum = momentum
            m.train(training)
        model.train(was_training)
    release_free_memory(collect=True)   # the pass's activations, and what the rounds left for the collector
    _LAST[model] = (key, [tuple(None if getattr(m, n, None) is None else getattr(m, n).detach().clone() for n in _STATS)
                          for m in bns])
    return len(bns)


def images_read(x: torch.Tensor) -> int:
    """How many of the samples `x` (N, C, H, W) a re-estimation reads: all of them up to MAX_PIXELS, at
    least MIN_IMAGES (or all, if fewer)."""
    pixels = max(1, math.prod(x.shape[2:]))
    return min(len(x), max(MIN_IMAGES, MAX_PIXELS // pixels))


def _fingerprint(model: nn.Module, x: torch.Tensor, batch_size: int) -> tuple:
    """What a re-estimation's result depends on: the layers (type, settings, hooks), every parameter and
    buffer other than the statistics themselves (the very tensor, its version, storage, shape and sum),
    the data (the same) and the batch size. A change to any of them, in place or not, changes it."""
    parts: list = [batch_size, _tensor_key(x)]
    for name, module in model.named_modules():
        parts.append((name, type(module), module.extra_repr(), tuple(module._forward_hooks),
                      tuple(module._forward_pre_hooks)))
        own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        for pname, t in own:
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and pname in _STATS:
                continue
            parts.append((pname, _tensor_key(t)))
    return tuple(parts)


class _Same:
    """Equal to another _Same only for the very same tensor object (a weak reference: nothing kept alive)."""

    __slots__ = ("ref",)

    def __init__(self, t: torch.Tensor):
        self.ref = weakref.ref(t)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Same) and self.ref() is not None and self.ref() is other.ref()

    __hash__ = None


def _tensor_key(t: torch.Tensor) -> tuple:
    data = t.detach()
    total = float(data.sum()) if data.numel() else 0.0   # in the tensor's own dtype: no float64 copy
    return (_Same(t), t._version, data.data_ptr(), tuple(data.shape), data.stride(), data.dtype, str(data.device),
            total)
