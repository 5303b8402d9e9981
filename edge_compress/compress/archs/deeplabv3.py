"""DeepLabV3 (Chen et al. 2017) with a dilated ResNet backbone, in torchvision's layout, without torchvision.

Module names follow torchvision's `deeplabv3_resnet50` (backbone.conv1 ... backbone.layer4, classifier.0 the ASPP
with convs.0-4 and project, classifier.1/2/4 the head, aux_classifier.0/1/4 the auxiliary FCN head on layer3) so
that a torchvision state dict loads as is: 42,004,074 parameters with the auxiliary head, as torchvision's
COCO_WITH_VOC_LABELS weights, and 39,638,869 without. The backbone's layers 3 and 4 are dilated (output stride 8).
Without `aux_loss` the model returns the per-pixel logits; with it, a dict {"out", "aux"} as torchvision does.
`deeplabv3_resnet18` is the small variant: a ResNet-18 backbone (no torchvision equivalent), the same head.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import IMAGENET_MEAN, IMAGENET_STD, register_arch
from .resnet_imagenet import BasicBlock, Bottleneck, ImageNetResNet

VOC_CLASSES = 21   # 20 object classes and background, as torchvision's weights


def _cbr(inp: int, oup: int, k: int, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(inp, oup, k, padding=dilation * (k - 1) // 2, dilation=dilation, bias=False),
            nn.BatchNorm2d(oup), nn.ReLU()]


class ASPPPooling(nn.Sequential):
    def __init__(self, inp: int, oup: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), *_cbr(inp, oup, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """A 1x1 conv, three dilated 3x3 convs and image pooling in parallel, concatenated, projected."""

    def __init__(self, inp: int, rates=(12, 24, 36), oup: int = 256):
        super().__init__()
        self.convs = nn.ModuleList([nn.Sequential(*_cbr(inp, oup, 1)),
                                    *(nn.Sequential(*_cbr(inp, oup, 3, r)) for r in rates),
                                    ASPPPooling(inp, oup)])
        self.project = nn.Sequential(*_cbr(len(self.convs) * oup, oup, 1), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], 1))


class Backbone(ImageNetResNet):
    """The ResNet's feature layers only (torchvision's IntermediateLayerGetter keeps no avgpool nor fc)."""

    def __init__(self, block, layers, width: int):
        super().__init__(block, layers, dilate=(False, True, True), width=width)
        del self.avgpool, self.fc

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x))))))
        aux = self.layer3(x)
        return {"aux": aux, "out": self.layer4(aux)}


class DeepLabV3(nn.Module):
    def __init__(self, block, layers, num_classes: int = VOC_CLASSES, width: int = 64, head: int = 256,
                 aux_loss: bool = False):
        super().__init__()
        self.backbone = Backbone(block, layers, width)
        out = 8 * width * block.expansion
        self.classifier = nn.Sequential(ASPP(out, oup=head), *_cbr(head, head, 3), nn.Conv2d(head, num_classes, 1))
        self.aux_classifier = nn.Sequential(*_cbr(out // 2, out // 8, 3), nn.Dropout(0.1),
                                            nn.Conv2d(out // 8, num_classes, 1)) if aux_loss else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        out = F.interpolate(self.classifier(features["out"]), size=size, mode="bilinear", align_corners=False)
        if self.aux_classifier is None:
            return out
        aux = F.interpolate(self.aux_classifier(features["aux"]), size=size, mode="bilinear", align_corners=False)
        return {"out": out, "aux": aux}


_SEGMENTATION = dict(task="segmentation", input_shape=(3, 520, 520), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     num_classes=VOC_CLASSES, contract_shape=(3, 32, 32))


@register_arch("deeplabv3_resnet50", description="DeepLabV3, dilated ResNet-50, torchvision layout (39.6 M params)",
               contract_kwargs={"num_classes": 3, "width": 16, "head": 32}, **_SEGMENTATION)
def deeplabv3_resnet50(num_classes: int = VOC_CLASSES, aux_loss: bool = False, width: int = 64,
                       head: int = 256) -> DeepLabV3:
    return DeepLabV3(Bottleneck, (3, 4, 6, 3), num_classes, width, head, aux_loss)


@register_arch("deeplabv3_resnet18", description="DeepLabV3, dilated ResNet-18 backbone (15.9 M params)",
               contract_kwargs={"num_classes": 3, "width": 16, "head": 32}, **_SEGMENTATION)
def deeplabv3_resnet18(num_classes: int = VOC_CLASSES, aux_loss: bool = False, width: int = 64,
                       head: int = 256) -> DeepLabV3:
    return DeepLabV3(BasicBlock, (2, 2, 2, 2), num_classes, width, head, aux_loss)
