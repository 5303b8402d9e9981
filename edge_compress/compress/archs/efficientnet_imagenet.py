"""ImageNet EfficientNet-B0 (Tan & Le 2019) in torchvision's layout, without depending on torchvision.

Module names follow torchvision's `efficientnet_b0` (features.0 stem, features.1-7 stages of MBConv blocks with
block.K and the squeeze-excitation's fc1/fc2, features.8 the last 1x1 conv, classifier.1) so that a torchvision
state dict loads as is: 5,288,548 parameters, as torchvision's. SiLU activations, squeeze-excitation with
sigmoid gates, 3x3 and 5x5 depthwise convs; stochastic depth is an identity at inference and holds no weights.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .mobilenetv2_imagenet import _make_divisible
from .mobilenetv3_imagenet import SqueezeExcitation, conv_norm_act
from .registry import IMAGENET_MEAN, IMAGENET_STD, register_arch

# (expansion, kernel, first stride, input channels, output channels, repeats): B0, the paper's table 1.
B0 = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
      (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))


class MBConv(nn.Module):
    def __init__(self, inp: int, oup: int, expand: int, k: int, stride: int):
        super().__init__()
        self.use_res_connect = stride == 1 and inp == oup
        hidden = _make_divisible(inp * expand)
        layers: list[nn.Module] = []
        if hidden != inp:
            layers.append(conv_norm_act(inp, hidden, 1, act=nn.SiLU, eps=1e-5))
        layers += [conv_norm_act(hidden, hidden, k, stride, groups=hidden, act=nn.SiLU, eps=1e-5),
                   SqueezeExcitation(hidden, max(1, inp // 4), act=nn.SiLU, gate=nn.Sigmoid),
                   conv_norm_act(hidden, oup, 1, act=None, eps=1e-5)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res_connect else y


class EfficientNet(nn.Module):
    def __init__(self, settings=B0, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        ch = lambda c: _make_divisible(c * width_mult)  # noqa: E731
        layers: list[nn.Module] = [conv_norm_act(3, ch(settings[0][3]), 3, 2, act=nn.SiLU, eps=1e-5)]
        for expand, k, stride, inp, oup, n in settings:
            layers.append(nn.Sequential(*(MBConv(ch(inp) if i == 0 else ch(oup), ch(oup), expand, k,
                                                 stride if i == 0 else 1) for i in range(n))))
        last_in = ch(settings[-1][4])
        layers.append(conv_norm_act(last_in, 4 * last_in, 1, act=nn.SiLU, eps=1e-5))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout, inplace=True), nn.Linear(4 * last_in, num_classes))
        for m in self.modules():   # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                r = 1.0 / m.out_features ** 0.5
                nn.init.uniform_(m.weight, -r, r)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_arch("efficientnet_b0", description="ImageNet EfficientNet-B0, torchvision layout (5.3 M params)",
               input_shape=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=1000,
               contract_kwargs={"num_classes": 10, "width_mult": 0.5}, contract_shape=(3, 64, 64))
def efficientnet_b0(num_classes: int = 1000, width_mult: float = 1.0) -> EfficientNet:
    return EfficientNet(B0, num_classes, width_mult)
