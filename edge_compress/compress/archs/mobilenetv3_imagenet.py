"""ImageNet MobileNetV3 small and large (Howard et al. 2019) in torchvision's layout, without torchvision.

Module names follow torchvision's `mobilenet_v3_small` / `mobilenet_v3_large` (features.0.0/1 stem,
features.N.block.K for the inverted residuals with `fc1`/`fc2` in the squeeze-excitation, classifier.0/3)
so that a torchvision state dict loads as is: 2,542,856 and 5,483,032 parameters, as torchvision's.
Hardswish activations, squeeze-excitation with hardsigmoid gates, 3x3 and 5x5 depthwise convs.
"""
from __future__ import annotations


import torch
import torch.nn as nn

from .mobilenetv2_imagenet import _make_divisible
from .registry import IMAGENET_MEAN, IMAGENET_STD, register_arch

# (kernel, expanded, out, use SE, activation "RE"/"HS", stride), the paper's tables 1 and 2.
LARGE = ((3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
         (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
         (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
         (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
         (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1))
SMALL = ((3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
         (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
         (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
         (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1))


def conv_norm_act(inp: int, oup: int, k: int, stride: int = 1, groups: int = 1, act=nn.Hardswish,
                  eps: float = 0.001) -> nn.Sequential:
    """torchvision's Conv2dNormActivation (keys .0 conv, .1 norm); MobileNetV3 uses BN eps 0.001."""
    layers: list[nn.Module] = [nn.Conv2d(inp, oup, k, stride, (k - 1) // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(oup, eps=eps, momentum=0.01)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """torchvision's SqueezeExcitation: pool, fc1 (1x1 conv), activation, fc2, gate; scales the input."""

    def __init__(self, channels: int, squeeze: int, act=nn.ReLU, gate=nn.Hardsigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation, self.scale_activation = act(), gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * s


class V3Block(nn.Module):
    def __init__(self, inp: int, k: int, expanded: int, oup: int, se: bool, act: str, stride: int,
                 width_mult: float = 1.0):
        super().__init__()
        exp, out = _make_divisible(expanded * width_mult), _make_divisible(oup * width_mult)
        self.use_res_connect = stride == 1 and inp == out
        activation = nn.Hardswish if act == "HS" else nn.ReLU
        layers: list[nn.Module] = []
        if exp != inp:
            layers.append(conv_norm_act(inp, exp, 1, act=activation))
        layers.append(conv_norm_act(exp, exp, k, stride, groups=exp, act=activation))
        if se:
            layers.append(SqueezeExcitation(exp, _make_divisible(exp // 4)))
        layers.append(conv_norm_act(exp, out, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res_connect else y


class MobileNetV3(nn.Module):
    def __init__(self, settings, last_channel: int, num_classes: int = 1000, width_mult: float = 1.0,
                 dropout: float = 0.2):
        super().__init__()
        inp = _make_divisible(16 * width_mult)
        layers: list[nn.Module] = [conv_norm_act(3, inp, 3, 2)]
        for k, exp, out, se, act, s in settings:
            layers.append(V3Block(inp, k, exp, out, se, act, s, width_mult))
            inp = layers[-1].out_channels
        layers.append(conv_norm_act(inp, 6 * inp, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last = _make_divisible(last_channel * width_mult)
        self.classifier = nn.Sequential(nn.Linear(6 * inp, last), nn.Hardswish(inplace=True),
                                        nn.Dropout(dropout, inplace=True), nn.Linear(last, num_classes))
        for m in self.modules():   # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


_IMAGENET = dict(input_shape=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=1000,
                 contract_kwargs={"num_classes": 10, "width_mult": 0.5}, contract_shape=(3, 64, 64))


@register_arch("mobilenet_v3_small", description="ImageNet MobileNetV3-small, torchvision layout (2.5 M params)",
               **_IMAGENET)
def mobilenet_v3_small(num_classes: int = 1000, width_mult: float = 1.0) -> MobileNetV3:
    return MobileNetV3(SMALL, 1024, num_classes, width_mult)


@register_arch("mobilenet_v3_large", description="ImageNet MobileNetV3-large, torchvision layout (5.5 M params)",
               **_IMAGENET)
def mobilenet_v3_large(num_classes: int = 1000, width_mult: float = 1.0) -> MobileNetV3:
    return MobileNetV3(LARGE, 1280, num_classes, width_mult)


