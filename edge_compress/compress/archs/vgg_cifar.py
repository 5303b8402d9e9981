"""VGG-16 with batch norm for 32x32 inputs (the CIFAR variant used across the pruning literature)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_arch

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class CifarVGG(nn.Module):
    def __init__(self, cfg=VGG16_CFG, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                in_ch = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@register_arch("vgg16_bn", description="VGG-16 with batch norm for CIFAR (14.7 M params)",
               contract_kwargs={"width_mult": 0.25})
def vgg16_bn(num_classes: int = 10, width_mult: float = 1.0) -> CifarVGG:
    return CifarVGG(tuple(v if v == "M" else int(v * width_mult) for v in VGG16_CFG), num_classes)
