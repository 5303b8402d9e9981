"""ImageNet ResNet-18/34/50 (He et al. 2016) in torchvision's layout, without depending on torchvision.

Module names follow torchvision's (conv1, bn1, layer1.0.conv1, ..., downsample.0/1, fc) so that a
torchvision state dict loads as is. ResNet-50 puts the stride on the 3x3 conv of the bottleneck
("ResNet v1.5"), as torchvision does; the parameter counts then match torchvision's exactly.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .registry import IMAGENET_MEAN, IMAGENET_STD, register_arch


def _downsample(in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(in_planes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_planes, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ImageNetResNet(nn.Module):
    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, int, int, int],
                 num_classes: int = 1000, dilate: tuple[bool, bool, bool] = (False, False, False),
                 width: int = 64):
        """`dilate[i]` replaces the stride of layer i + 2 by a dilation, as torchvision's
        `replace_stride_with_dilation` (output stride 8 for DeepLabV3 with (False, True, True)); `width` is the
        first stage's channels (64 in the paper; smaller for fast tests), doubled at every stage."""
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_planes, dilation = width, 1
        for i, (planes, n) in enumerate(zip((width, 2 * width, 4 * width, 8 * width), layers), start=1):
            blocks, stride = [], 2 if i > 1 else 1
            if i > 1 and dilate[i - 2]:
                # torchvision: the layer's first block keeps the previous dilation, the others use the new one
                previous, dilation, stride = dilation, dilation * 2, 1
            else:
                previous = dilation
            for j in range(n):
                blocks.append(block(in_planes, planes, stride if j == 0 else 1, previous if j == 0 else dilation))
                in_planes = planes * block.expansion
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


_IMAGENET = dict(input_shape=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=1000,
                 contract_kwargs={"num_classes": 10, "width": 16}, contract_shape=(3, 32, 32))


@register_arch("resnet18", description="ImageNet ResNet-18, torchvision layout (11.7 M params)", **_IMAGENET)
def resnet18(num_classes: int = 1000, width: int = 64) -> ImageNetResNet:
    return ImageNetResNet(BasicBlock, (2, 2, 2, 2), num_classes, width=width)


@register_arch("resnet34", description="ImageNet ResNet-34, torchvision layout (21.8 M params)", **_IMAGENET)
def resnet34(num_classes: int = 1000, width: int = 64) -> ImageNetResNet:
    return ImageNetResNet(BasicBlock, (3, 4, 6, 3), num_classes, width=width)


@register_arch("resnet50", description="ImageNet ResNet-50 v1.5, torchvision layout (25.6 M params)", **_IMAGENET)
def resnet50(num_classes: int = 1000, width: int = 64) -> ImageNetResNet:
    return ImageNetResNet(Bottleneck, (3, 4, 6, 3), num_classes, width=width)
