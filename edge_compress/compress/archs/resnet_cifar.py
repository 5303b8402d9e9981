"""CIFAR ResNet-20/32/44/56 (He et al. 2016, section 4.2) with "option A" shortcuts.

Key names match the pretrained weights in ../shared/models (after stripping `module.`). The option-A
shortcut subsamples and zero-pads channels without parameters; pruners that do not understand the pad
break on it, which is exactly why it is here.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_arch


class PadShortcut(nn.Module):
    """Option-A shortcut: take every second pixel, zero-pad `pad` channels on each side."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(planes // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        for i, planes in enumerate((16, 32, 64), start=1):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 1 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


@register_arch("resnet20", description="CIFAR ResNet-20, option-A shortcuts (0.27 M params)")
def resnet20(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(20, num_classes)


@register_arch("resnet32", description="CIFAR ResNet-32, option-A shortcuts (0.46 M params)")
def resnet32(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(32, num_classes)


@register_arch("resnet44", description="CIFAR ResNet-44, option-A shortcuts (0.66 M params)")
def resnet44(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(44, num_classes)


@register_arch("resnet56", description="CIFAR ResNet-56, option-A shortcuts (0.85 M params)")
def resnet56(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(56, num_classes)
