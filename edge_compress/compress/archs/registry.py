"""One registry of reference architectures usable as `--arch NAME`.

Each entry carries the metadata an exporter and a calibration loader need (input shape, mean, std),
in the manner of timm's pretrained configs. Unknown or duplicate names raise, listing what exists.

`task` says what the outputs are:
- "classification": one (N, num_classes) logits tensor.
- "segmentation": per-pixel class logits (N, num_classes, H, W) at the input's resolution.
- "detection": a tuple of three (N, 4 * reg_max + num_classes, H/s, W/s) maps at strides 8, 16, 32
  (YOLOv8's raw head outputs: box distributions then class logits per cell; decoding and NMS are post-processing).
For every task `num_classes` is the number of object/pixel classes the head predicts (no background class is
added: a segmentation dataset that has one counts it, as torchvision's 21 VOC classes do).

`contract_kwargs` and `contract_shape` give a small, fast version of the architecture (narrow, low resolution)
that exercises the same structures; tests/test_zoo.py runs the whole pipeline on every entry at that size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

TASKS = ("classification", "detection", "segmentation")


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
    task: str = "classification"
    contract_kwargs: dict = field(default_factory=dict)
    contract_shape: tuple[int, int, int] | None = None   # C, H, W; None: input_shape

    @property
    def contract_input_shape(self) -> tuple[int, int, int]:
        return self.contract_shape or self.input_shape


_REGISTRY: dict[str, ArchInfo] = {}

# ImageNet statistics: the ImageNet models' normalisation, and also the one the shared pretrained CIFAR
# ResNets were trained with, so it is every entry's default.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def register_arch(name: str, *, input_shape=(3, 32, 32), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  num_classes: int = 10, description: str = "", task: str = "classification",
                  contract_kwargs: dict | None = None, contract_shape: tuple[int, int, int] | None = None):
    if task not in TASKS:
        raise ValueError(f"architecture {name!r}: task {task!r} is not one of {', '.join(TASKS)}")

    def wrap(factory):
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice; registered: {', '.join(arch_names())}")
        _REGISTRY[name] = ArchInfo(name, factory, tuple(input_shape), tuple(mean), tuple(std),
                                   num_classes, description or (factory.__doc__ or "").strip().split("\n")[0],
                                   task=task, contract_kwargs=dict(contract_kwargs or {}),
                                   contract_shape=tuple(contract_shape) if contract_shape else None)
        return factory
    return wrap


def get_arch(name: str) -> ArchInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; built-in: {', '.join(arch_names())}") from None


def arch_names() -> list[str]:
    return sorted(_REGISTRY)
