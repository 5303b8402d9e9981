"""ConvNeXt (Liu et al. 2022) in torchvision's layout, without depending on torchvision.

Module names follow torchvision's `convnext_tiny` (features.0 patchify stem with a channels LayerNorm,
features.1/3/5/7 stages of CNBlocks with layer_scale and block.0 (7x7 depthwise) / block.2 (LayerNorm) /
block.3, block.5 (the pointwise MLP as Linear layers on channels-last tensors), features.2/4/6 downsampling,
classifier.0/2) so that a torchvision state dict loads as is: 28,589,128 parameters, as torchvision's.
`convnext_pico` has timm's convnext_pico widths and depths in the same layout.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import IMAGENET_MEAN, IMAGENET_STD, register_arch


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (torchvision's LayerNorm2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims: list[int]):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.permute(x, self.dims)


class CNBlock(nn.Module):
    def __init__(self, dim: int, layer_scale: float = 1e-6):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute([0, 2, 3, 1]),
                                   nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim), nn.GELU(),
                                   nn.Linear(4 * dim, dim), Permute([0, 3, 1, 2]))
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale * self.block(x)   # stochastic depth: an identity at inference


class ConvNeXt(nn.Module):
    def __init__(self, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), num_classes: int = 1000,
                 layer_scale: float = 1e-6):
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6))]
        for i, (d, dim) in enumerate(zip(depths, dims)):
            layers.append(nn.Sequential(*(CNBlock(dim, layer_scale) for _ in range(d))))
            if i < len(dims) - 1:
                layers.append(nn.Sequential(LayerNorm2d(dim, eps=1e-6), nn.Conv2d(dim, dims[i + 1], 2, 2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(dims[-1], eps=1e-6), nn.Flatten(1),
                                        nn.Linear(dims[-1], num_classes))
        for m in self.modules():   # torchvision's initialisation
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))


_IMAGENET = dict(input_shape=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=1000)


@register_arch("convnext_tiny", description="ImageNet ConvNeXt-T, torchvision layout (28.6 M params)",
               contract_kwargs={"num_classes": 10, "depths": (1, 1, 1, 1), "dims": (32, 64, 128, 256)},
               contract_shape=(3, 64, 64), **_IMAGENET)
def convnext_tiny(num_classes: int = 1000, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)) -> ConvNeXt:
    return ConvNeXt(depths, dims, num_classes)


@register_arch("convnext_pico", description="ConvNeXt-pico sizes (timm), torchvision layout (9.0 M params)",
               contract_kwargs={"num_classes": 10, "dims": (16, 32, 64, 128)}, contract_shape=(3, 64, 64), **_IMAGENET)
def convnext_pico(num_classes: int = 1000, dims=(64, 128, 256, 512)) -> ConvNeXt:
    return ConvNeXt((2, 2, 6, 2), dims, num_classes)
