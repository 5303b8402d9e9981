"""ImageNet VGG-13 (Simonyan & Zisserman 2015, configuration B, no batch norm) in torchvision's layout,
without depending on torchvision.

Module names follow torchvision's `vgg13` (features.N for the convolutions, classifier.0/3/6 for the
three linear layers) so that a torchvision state dict loads as is; 133,047,848 parameters, as
torchvision's. timm's `vgg13` computes the first two classifier layers as a 7x7 and a 1x1 convolution
on the 7x7 feature map (its ConvMlp): the same multiply-adds and the same weights to read.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .registry import IMAGENET_MEAN, IMAGENET_STD, register_arch

VGG13_CFG = (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class ImageNetVGG(nn.Module):
    def __init__(self, cfg=VGG13_CFG, num_classes: int = 1000, dropout: float = 0.5, hidden: int = 4096):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(in_ch * 7 * 7, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_arch("vgg13", description="ImageNet VGG-13 without batch norm, torchvision layout (133 M params)",
               input_shape=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=1000,
               # the contract runs at 224: the 7x7 adaptive pooling exports to ONNX only when it divides its input
               contract_kwargs={"num_classes": 10, "width_mult": 0.125}, contract_shape=(3, 224, 224))
def vgg13(num_classes: int = 1000, width_mult: float = 1.0) -> ImageNetVGG:
    cfg = tuple(v if v == "M" else int(v * width_mult) for v in VGG13_CFG)
    return ImageNetVGG(cfg, num_classes, hidden=int(4096 * width_mult))
