"""A YOLOv8-style detector (the YOLOv8-n layout of ultralytics' yolov8.yaml), written here with its own key names.

Backbone: strided Conv-BN-SiLU stages with C2f blocks (cv1 chunked in two halves, bottlenecks on the last half,
everything concatenated) and SPPF (three chained 5x5 max-pools concatenated). Neck: upsampling and concatenation
top-down, strided convs and concatenation bottom-up (PAN). Head: per level a box branch (4 x reg_max distribution
bins) and a class branch, concatenated per cell. `forward` returns the three raw maps at strides 8, 16, 32 as a
tuple; decoding the box distributions (DFL) and NMS are post-processing, outside the network. With width 0.25,
depth 1/3 and 80 classes the parameters are 3,157,184: ultralytics' 3,157,200 less the 16 fixed DFL weights.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_arch

COCO_CLASSES = 80


class Conv(nn.Module):
    """Conv (no bias) - BN - SiLU; ultralytics' BatchNorm settings."""

    def __init__(self, inp: int, oup: int, k: int = 1, s: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(inp, oup, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(oup, eps=0.001, momentum=0.03)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool):
        super().__init__()
        self.cv1, self.cv2 = Conv(c, c, 3), Conv(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    def __init__(self, inp: int, oup: int, n: int = 1, shortcut: bool = False):
        super().__init__()
        self.c = oup // 2
        self.cv1 = Conv(inp, 2 * self.c)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))
        self.cv2 = Conv((2 + n) * self.c, oup)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, inp: int, oup: int, k: int = 5):
        super().__init__()
        c = inp // 2
        self.cv1, self.cv2, self.k = Conv(inp, c), Conv(4 * c, oup), k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(F.max_pool2d(y[-1], self.k, 1, self.k // 2))
        return self.cv2(torch.cat(y, 1))


class DetectHead(nn.Module):
    """Per level: box = Conv, Conv, 1x1 to 4 * reg_max; cls = Conv, Conv, 1x1 to num_classes; concatenated."""

    def __init__(self, channels: tuple[int, ...], num_classes: int, reg_max: int = 16):
        super().__init__()
        c2, c3 = max(16, channels[0] // 4, 4 * reg_max), max(channels[0], min(num_classes, 100))
        self.box = nn.ModuleList(nn.Sequential(Conv(c, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
                                 for c in channels)
        self.cls = nn.ModuleList(nn.Sequential(Conv(c, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, num_classes, 1))
                                 for c in channels)

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return tuple(torch.cat([b(x), c(x)], 1) for x, b, c in zip(xs, self.box, self.cls))


class YoloV8(nn.Module):
    def __init__(self, num_classes: int = COCO_CLASSES, width: float = 0.25, depth: float = 1 / 3,
                 max_channels: int = 1024):
        super().__init__()
        ch = lambda c: int(min(c, max_channels) * width)  # noqa: E731
        n = lambda k: max(round(k * depth), 1)  # noqa: E731
        c1, c2, c3, c4, c5 = ch(64), ch(128), ch(256), ch(512), ch(1024)
        self.stem, self.down1, self.stage1 = Conv(3, c1, 3, 2), Conv(c1, c2, 3, 2), C2f(c2, c2, n(3), True)
        self.down2, self.stage2 = Conv(c2, c3, 3, 2), C2f(c3, c3, n(6), True)    # P3, stride 8
        self.down3, self.stage3 = Conv(c3, c4, 3, 2), C2f(c4, c4, n(6), True)    # P4, stride 16
        self.down4, self.stage4 = Conv(c4, c5, 3, 2), C2f(c5, c5, n(3), True)    # P5, stride 32
        self.sppf = SPPF(c5, c5)
        self.top_p4 = C2f(c5 + c4, c4, n(3))
        self.top_p3 = C2f(c4 + c3, c3, n(3))
        self.down_p3, self.bottom_p4 = Conv(c3, c3, 3, 2), C2f(c3 + c4, c4, n(3))
        self.down_p4, self.bottom_p5 = Conv(c4, c4, 3, 2), C2f(c4 + c5, c5, n(3))
        self.head = DetectHead((c3, c4, c5), num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p3 = self.stage2(self.down2(self.stage1(self.down1(self.stem(x)))))
        p4 = self.stage3(self.down3(p3))
        p5 = self.sppf(self.stage4(self.down4(p4)))
        t4 = self.top_p4(torch.cat([F.interpolate(p5, scale_factor=2.0, mode="nearest"), p4], 1))
        n3 = self.top_p3(torch.cat([F.interpolate(t4, scale_factor=2.0, mode="nearest"), p3], 1))
        n4 = self.bottom_p4(torch.cat([self.down_p3(n3), t4], 1))
        n5 = self.bottom_p5(torch.cat([self.down_p4(n4), p5], 1))
        return self.head([n3, n4, n5])


@register_arch("yolov8n", description="YOLOv8-n style detector: C2f, SPPF, PAN neck, 3 outputs (3.2 M params)",
               task="detection", input_shape=(3, 640, 640), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
               num_classes=COCO_CLASSES, contract_kwargs={"num_classes": 4, "width": 0.25},
               contract_shape=(3, 64, 64))
def yolov8n(num_classes: int = COCO_CLASSES, width: float = 0.25, depth: float = 1 / 3) -> YoloV8:
    """YOLOv8 inputs are RGB scaled to [0, 1] with no mean/std: hence mean 0, std 1."""
    return YoloV8(num_classes, width, depth)
