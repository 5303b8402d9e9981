"""ImageNet DenseNet-121 (Huang et al. 2017) in torchvision's layout, without depending on torchvision.

Module names follow torchvision's `densenet121` (features.conv0/norm0, features.denseblockN.denselayerK.norm1/
conv1/norm2/conv2, features.transitionN.norm/conv, features.norm5, classifier) so that a torchvision state dict
loads as is (torchvision's own loader renames the old "norm.1"-style keys of its checkpoint first):
7,978,856 parameters, as torchvision's. Every layer reads the concatenation of all feature maps before it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import IMAGENET_MEAN, IMAGENET_STD, register_arch


class DenseLayer(nn.Module):
    def __init__(self, inp: int, growth: int, bn_size: int):
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(inp), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(inp, bn_size * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.ModuleDict):
    def __init__(self, n: int, inp: int, growth: int, bn_size: int):
        super().__init__({f"denselayer{i + 1}": DenseLayer(inp + i * growth, growth, bn_size) for i in range(n)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, inp: int, out: int):
        super().__init__()
        self.norm, self.relu = nn.BatchNorm2d(inp), nn.ReLU(inplace=True)
        self.conv, self.pool = nn.Conv2d(inp, out, 1, bias=False), nn.AvgPool2d(2, 2)


class DenseNet(nn.Module):
    def __init__(self, growth_rate: int = 32, block_config=(6, 12, 24, 16), num_init_features: int = 64,
                 bn_size: int = 4, num_classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, num_init_features, 7, 2, 3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(num_init_features))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        c = num_init_features
        for i, n in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(n, c, growth_rate, bn_size))
            c += n * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", Transition(c, c // 2))
                c //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():   # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(F.relu(self.features(x)), 1)
        return self.classifier(torch.flatten(x, 1))


@register_arch("densenet121", description="ImageNet DenseNet-121, torchvision layout (8.0 M params)",
               input_shape=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=1000,
               contract_kwargs={"num_classes": 10, "growth_rate": 16, "block_config": (2, 2, 2, 2),
                                "num_init_features": 32}, contract_shape=(3, 64, 64))
def densenet121(num_classes: int = 1000, growth_rate: int = 32, block_config=(6, 12, 24, 16),
                num_init_features: int = 64) -> DenseNet:
    return DenseNet(growth_rate, block_config, num_init_features, 4, num_classes)
