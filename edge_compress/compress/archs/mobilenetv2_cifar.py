"""MobileNetV2 for 32x32 inputs: the ImageNet network with stride 1 in the stem and first stage.

Depthwise convolutions and inverted residuals make it the hard case for channel coupling.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_arch

# (expansion t, output channels c, repeats n, first stride s); CIFAR variant: strides of the first two
# stages reduced so a 32x32 input still ends at 4x4.
CIFAR_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                  (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn(inp: int, oup: int, k: int, stride: int, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(inp, oup, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(oup)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(inp, hidden, 1, 1))
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, oup, 1, 1, act=False)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class CifarMobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10, width_mult: float = 1.0):
        super().__init__()
        inp = int(32 * width_mult)
        layers: list[nn.Module] = [_conv_bn(3, inp, 3, 1)]
        for t, c, n, s in CIFAR_SETTINGS:
            oup = int(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(inp, oup, s if i == 0 else 1, t))
                inp = oup
        self.last_channels = int(1280 * max(1.0, width_mult))
        layers.append(_conv_bn(inp, self.last_channels, 1, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.last_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_arch("mobilenetv2", description="MobileNetV2 for CIFAR (2.2 M params)",
               contract_kwargs={"width_mult": 0.5})
def mobilenetv2(num_classes: int = 10, width_mult: float = 1.0) -> CifarMobileNetV2:
    return CifarMobileNetV2(num_classes, width_mult)
