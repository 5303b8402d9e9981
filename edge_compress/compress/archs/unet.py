"""U-Net (Ronneberger et al. 2015) for semantic segmentation: per-pixel class logits at the input's resolution.

Own key names (inc, down1-4, up1-4, outc: the widespread PyTorch layout), BatchNorm after every 3x3 conv and
bilinear upsampling followed by a conv instead of transposed convs (so the channel count halves in the conv).
The skip connections are concatenations of encoder and upsampled decoder features.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import IMAGENET_MEAN, IMAGENET_STD, register_arch


class DoubleConv(nn.Sequential):
    def __init__(self, inp: int, oup: int, mid: int | None = None):
        mid = mid or oup
        super().__init__(nn.Conv2d(inp, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, oup, 3, padding=1, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


class Down(nn.Sequential):
    def __init__(self, inp: int, oup: int):
        super().__init__(nn.MaxPool2d(2), DoubleConv(inp, oup))


class Up(nn.Module):
    def __init__(self, inp: int, oup: int):
        super().__init__()
        self.conv = DoubleConv(inp, oup, inp // 2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return self.conv(torch.cat([skip, x], 1))


class UNet(nn.Module):
    def __init__(self, num_classes: int = 2, width: int = 64):
        super().__init__()
        w = width
        self.inc = DoubleConv(3, w)
        self.down1, self.down2, self.down3, self.down4 = Down(w, 2 * w), Down(2 * w, 4 * w), Down(4 * w, 8 * w), \
            Down(8 * w, 8 * w)
        self.up1, self.up2, self.up3, self.up4 = Up(16 * w, 4 * w), Up(8 * w, 2 * w), Up(4 * w, w), Up(2 * w, w)
        self.outc = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x = self.up1(self.down4(x4), x4)
        return self.outc(self.up4(self.up3(self.up2(x, x3), x2), x1))


@register_arch("unet", description="U-Net, per-pixel class logits, bilinear upsampling (17.3 M params)",
               task="segmentation", input_shape=(3, 256, 256), mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=2,
               contract_kwargs={"num_classes": 3, "width": 16}, contract_shape=(3, 32, 32))
def unet(num_classes: int = 2, width: int = 64) -> UNet:
    return UNet(num_classes, width)
