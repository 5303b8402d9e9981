"""ImageNet SqueezeNet 1.1 (Iandola et al. 2016) in torchvision's layout, without depending on torchvision.

Module names follow torchvision's `squeezenet1_1` (features.N Fire modules with squeeze / expand1x1 / expand3x3,
classifier.1 the final 1x1 conv) so that a torchvision state dict loads as is: 1,235,496 parameters, as
torchvision's. The classifier is a 1x1 conv, a ReLU and a global average pool: the last conv is the output layer.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .registry import IMAGENET_MEAN, IMAGENET_STD, register_arch


class Fire(nn.Module):
    """Squeeze (1x1) then two parallel expands (1x1 and 3x3) concatenated along the channels."""

    def __init__(self, inp: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze, self.squeeze_activation = nn.Conv2d(inp, squeeze, 1), nn.ReLU(inplace=True)
        self.expand1x1, self.expand1x1_activation = nn.Conv2d(squeeze, expand1x1, 1), nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


class SqueezeNet(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.5):
        super().__init__()
        c = lambda v: max(1, int(v * width_mult))  # noqa: E731
        pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
        fire = lambda i, s, e: Fire(c(i), c(s), c(e), c(e))  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(3, c(64), 3, 2), nn.ReLU(inplace=True), pool(),
            fire(64, 16, 64), fire(128, 16, 64), pool(),
            fire(128, 32, 128), fire(256, 32, 128), pool(),
            fire(256, 48, 192), fire(384, 48, 192), fire(384, 64, 256), fire(512, 64, 256))
        final = nn.Conv2d(2 * c(256), num_classes, 1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), final, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1))
        for m in self.modules():   # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                if m is final:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


@register_arch("squeezenet1_1", description="ImageNet SqueezeNet 1.1, torchvision layout (1.2 M params)",
               input_shape=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=1000,
               contract_kwargs={"num_classes": 10, "width_mult": 0.5}, contract_shape=(3, 64, 64))
def squeezenet1_1(num_classes: int = 1000, width_mult: float = 1.0) -> SqueezeNet:
    return SqueezeNet(num_classes, width_mult)
