"""One registry of reference architectures usable as `--arch NAME`.

Each entry carries the metadata an exporter and a calibration loader need (input shape, mean, std),
in the manner of timm's pretrained configs. Unknown or duplicate names raise, listing what exists.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn


@dataclass(frozen=True)
class ArchInfo:
    name: str
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]  # C, H, W
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    description: str
    default_kwargs: dict = field(default_factory=dict)


_REGISTRY: dict[str, ArchInfo] = {}

CIFAR_MEAN = (0.485, 0.456, 0.406)  # the normalisation the shared pretrained ResNets were trained with
CIFAR_STD = (0.229, 0.224, 0.225)


def register_arch(name: str, *, input_shape=(3, 32, 32), mean=CIFAR_MEAN, std=CIFAR_STD,
                  num_classes: int = 10, description: str = ""):
    def wrap(factory):
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice; registered: {', '.join(arch_names())}")
        _REGISTRY[name] = ArchInfo(name, factory, tuple(input_shape), tuple(mean), tuple(std),
                                   num_classes, description or (factory.__doc__ or "").strip().split("\n")[0])
        return factory
    return wrap


def get_arch(name: str) -> ArchInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; built-in: {', '.join(arch_names())}") from None


def arch_names() -> list[str]:
    return sorted(_REGISTRY)
