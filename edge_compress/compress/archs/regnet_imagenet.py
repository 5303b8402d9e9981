"""ImageNet RegNetX/Y-400MF (Radosavovic et al. 2020) in torchvision's layout, without depending on torchvision.

Module names follow torchvision's `regnet_x_400mf` / `regnet_y_400mf` (stem.0/1, trunk_output.blockS.blockS-K
with proj, f.a / f.b (grouped 3x3) / f.se / f.c, fc) so that a torchvision state dict loads as is: 5,495,976 and
4,344,144 parameters, as torchvision's. The stage widths and depths come from the quantised linear rule of the
paper (torchvision's BlockParams.from_init_params); the Y models add squeeze-excitation.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn

from .mobilenetv2_imagenet import _make_divisible
from .mobilenetv3_imagenet import SqueezeExcitation
from .registry import IMAGENET_MEAN, IMAGENET_STD, register_arch


def _cbn(inp: int, oup: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(inp, oup, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(oup)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if act else nn.Sequential(*layers)


def stage_params(depth: int, w_0: float, w_a: float, w_m: float, group_width: int) -> list[tuple[int, int, int]]:
    """(width, depth, group width) per stage: widths w_0 + w_a * j quantised to powers of w_m, multiples of 8."""
    cont = np.arange(depth) * w_a + w_0
    capacity = np.round(np.log(cont / w_0) / math.log(w_m))
    widths = (np.round(w_0 * np.power(w_m, capacity) / 8) * 8).astype(int).tolist()
    stages: list[list[int]] = []
    for w in widths:
        if stages and stages[-1][0] == w:
            stages[-1][1] += 1
        else:
            stages.append([w, 1])
    out = []
    for w, d in stages:   # group width no wider than the stage, the stage a multiple of it
        g = min(group_width, w)
        out.append((_make_divisible(w, g), d, g))
    return out


class ResBottleneckBlock(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, group_width: int, se_ratio: float | None):
        super().__init__()
        self.proj = _cbn(inp, oup, 1, stride, act=False) if (inp != oup or stride != 1) else None
        f = OrderedDict(a=_cbn(inp, oup, 1), b=_cbn(oup, oup, 3, stride, groups=oup // group_width))
        if se_ratio:
            f["se"] = SqueezeExcitation(oup, int(round(se_ratio * inp)), gate=nn.Sigmoid)
        f["c"] = _cbn(oup, oup, 1, act=False)
        self.f = nn.Sequential(f)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.proj is None else self.proj(x)
        return self.activation(shortcut + self.f(x))


class RegNet(nn.Module):
    def __init__(self, depth: int, w_0: float, w_a: float, w_m: float, group_width: int, se_ratio: float | None = None,
                 num_classes: int = 1000, width_mult: float = 1.0):
        super().__init__()
        stem = _make_divisible(32 * width_mult)
        self.stem = _cbn(3, stem, 3, 2)
        blocks, inp = OrderedDict(), stem
        for s, (w, d, g) in enumerate(stage_params(depth, w_0 * width_mult, w_a * width_mult, w_m, group_width), 1):
            stage = OrderedDict()
            for j in range(d):
                stage[f"block{s}-{j}"] = ResBottleneckBlock(inp, w, 2 if j == 0 else 1, g, se_ratio)
                inp = w
            blocks[f"block{s}"] = nn.Sequential(stage)
        self.trunk_output = nn.Sequential(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inp, num_classes)
        for m in self.modules():   # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.trunk_output(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


_IMAGENET = dict(input_shape=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=1000,
                 contract_kwargs={"num_classes": 10, "width_mult": 0.5}, contract_shape=(3, 64, 64))


@register_arch("regnet_x_400mf", description="ImageNet RegNetX-400MF, torchvision layout (5.5 M params)", **_IMAGENET)
def regnet_x_400mf(num_classes: int = 1000, width_mult: float = 1.0) -> RegNet:
    return RegNet(22, 24, 24.48, 2.54, 16, None, num_classes, width_mult)


@register_arch("regnet_y_400mf", description="ImageNet RegNetY-400MF, torchvision layout (4.3 M params)", **_IMAGENET)
def regnet_y_400mf(num_classes: int = 1000, width_mult: float = 1.0) -> RegNet:
    return RegNet(16, 48, 27.89, 2.09, 8, 0.25, num_classes, width_mult)
