"""ImageNet MobileNetV2 (Sandler et al. 2018) in torchvision's layout, without depending on torchvision.

Module names follow torchvision's `mobilenet_v2` (features.0.0 / features.0.1 for the stem,
features.N.conv.* for the inverted residuals, features.18 for the last 1x1 conv, classifier.1 for the
linear layer) so that a torchvision state dict loads as is; 3,504,872 parameters, as torchvision's.
timm's `mobilenetv2_100` has the same layers under other names, so the layer costs are the same;
`width_mult` scales the channels as torchvision and timm do (rounded to multiples of 8, the last 1x1
conv kept at 1280 below 1.0), e.g. 0.5 for timm's `mobilenetv2_050` (1,968,680 parameters).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_arch
from .registry import IMAGENET_MEAN, IMAGENET_STD

# (expansion t, output channels c, repeats n, first stride s), as in the paper's table 2.
IMAGENET_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                     (6, 160, 3, 2), (6, 320, 1, 1))


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of `divisor`, never more than 10 % down (torchvision, timm)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn_relu6(inp: int, oup: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    # torchvision's Conv2dNormActivation: keys .0 (conv) and .1 (batch norm).
    return nn.Sequential(nn.Conv2d(inp, oup, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu6(inp, hidden, 1))
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class ImageNetMobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        inp = _make_divisible(32 * width_mult)
        layers: list[nn.Module] = [_conv_bn_relu6(3, inp, 3, 2)]
        for t, c, n, s in IMAGENET_SETTINGS:
            oup = _make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(inp, oup, s if i == 0 else 1, t))
                inp = oup
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        layers.append(_conv_bn_relu6(inp, self.last_channel, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


@register_arch("mobilenet_v2", description="ImageNet MobileNetV2, torchvision layout (3.5 M params)",
               input_shape=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=1000,
               contract_kwargs={"num_classes": 10, "width_mult": 0.5}, contract_shape=(3, 64, 64))
def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0) -> ImageNetMobileNetV2:
    return ImageNetMobileNetV2(num_classes, width_mult)
