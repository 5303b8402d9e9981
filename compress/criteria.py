"""One registry of channel-importance criteria; each entry builds a Torch-Pruning `Importance`.

A criterion maps a dependency group to one score per channel of the group's root (lower = pruned
first). The baselines are Torch-Pruning's own classes, so they behave exactly as in that library.
"""
from __future__ import annotations

from typing import Callable

import torch_pruning as tp

from .errors import InputError

_CRITERIA: dict[str, tuple[Callable[[], tp.importance.Importance], str]] = {}


def register_criterion(name: str, description: str):
    def wrap(factory):
        if name in _CRITERIA:
            raise ValueError(f"criterion {name!r} is registered twice")
        _CRITERIA[name] = (factory, description)
        return factory
    return wrap


def make_criterion(name: str) -> tp.importance.Importance:
    if name not in _CRITERIA:
        raise InputError(f"unknown --criterion {name!r}; available: {', '.join(criterion_names())}")
    return _CRITERIA[name][0]()


def criterion_names() -> list[str]:
    return sorted(_CRITERIA)


def describe_criterion(name: str) -> str:
    return _CRITERIA[name][1]


register_criterion("l1", "L1 norm of each channel's weights over the whole coupled group (Torch-Pruning)")(
    lambda: tp.importance.GroupMagnitudeImportance(p=1))
register_criterion("l2", "L2 norm of each channel's weights over the coupled group (Torch-Pruning)")(
    lambda: tp.importance.GroupMagnitudeImportance(p=2))
register_criterion("bn-scale", "absolute BatchNorm scale (network slimming; Torch-Pruning)")(
    lambda: tp.importance.BNScaleImportance())
register_criterion("lamp", "layer-adaptive magnitude (LAMP; Torch-Pruning)")(
    lambda: tp.importance.LAMPImportance())
register_criterion("fpgm", "distance to the filters' geometric median (FPGM; Torch-Pruning)")(
    lambda: tp.importance.FPGMImportance())
register_criterion("random", "random scores (a control; Torch-Pruning)")(
    lambda: tp.importance.RandomImportance())
