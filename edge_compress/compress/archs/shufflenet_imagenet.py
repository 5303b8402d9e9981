"""ImageNet ShuffleNetV2 x1.0 (Ma et al. 2018) in torchvision's layout, without depending on torchvision.

Module names follow torchvision's `shufflenet_v2_x1_0` (conv1.0/1, stageN.i.branch1/branch2.k, conv5.0/1,
fc) so that a torchvision state dict loads as is; 2,278,604 parameters, as torchvision's.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_arch
from .registry import IMAGENET_MEAN, IMAGENET_STD


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(b, c, h, w)


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)


class ShuffleUnit(nn.Module):
    """torchvision's InvertedResidual of ShuffleNetV2: split (stride 1) or duplicate (stride 2) the input,
    transform one half (both with stride 2), concatenate, shuffle the channels."""

    def __init__(self, inp: int, oup: int, stride: int):
        super().__init__()
        self.stride = stride
        half = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(_depthwise(inp, stride), nn.BatchNorm2d(inp),
                                         nn.Conv2d(inp, half, 1, bias=False), nn.BatchNorm2d(half),
                                         nn.ReLU(inplace=True))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(nn.Conv2d(inp if stride > 1 else half, half, 1, bias=False),
                                     nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                                     _depthwise(half, stride), nn.BatchNorm2d(half),
                                     nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half),
                                     nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ImageNetShuffleNetV2(nn.Module):
    def __init__(self, repeats=(4, 8, 4), channels=(24, 116, 232, 464, 1024), num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, channels[0], 3, 2, 1, bias=False), nn.BatchNorm2d(channels[0]),
                                   nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inp = channels[0]
        for i, (n, oup) in enumerate(zip(repeats, channels[1:4]), start=2):
            setattr(self, f"stage{i}", nn.Sequential(ShuffleUnit(inp, oup, 2),
                                                     *(ShuffleUnit(oup, oup, 1) for _ in range(n - 1))))
            inp = oup
        self.conv5 = nn.Sequential(nn.Conv2d(inp, channels[4], 1, bias=False), nn.BatchNorm2d(channels[4]),
                                   nn.ReLU(inplace=True))
        self.fc = nn.Linear(channels[4], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean([2, 3]))


@register_arch("shufflenet_v2_x1_0", description="ImageNet ShuffleNetV2 x1.0, torchvision layout (2.3 M params)",
               input_shape=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=1000,
               contract_kwargs={"num_classes": 10, "channels": (16, 32, 64, 128, 256)}, contract_shape=(3, 64, 64))
def shufflenet_v2_x1_0(num_classes: int = 1000, channels=(24, 116, 232, 464, 1024)) -> ImageNetShuffleNetV2:
    return ImageNetShuffleNetV2(channels=channels, num_classes=num_classes)
