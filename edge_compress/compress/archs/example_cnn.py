"""The small CNN of the built-in example (trained in seconds on procedurally generated images)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_arch


def _block(inp: int, oup: int) -> list[nn.Module]:
    return [nn.Conv2d(inp, oup, 3, padding=1, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True)]


class ExampleCNN(nn.Module):
    def __init__(self, num_classes: int = 8, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_block(3, w), *_block(w, w), nn.MaxPool2d(2),
            *_block(w, 2 * w), *_block(2 * w, 2 * w), nn.MaxPool2d(2),
            *_block(2 * w, 4 * w), *_block(4 * w, 4 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_arch("example-cnn", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=8,
               description="six-conv CNN of the built-in example (8 procedural pattern classes)")
def example_cnn(num_classes: int = 8, width: int = 16) -> ExampleCNN:
    return ExampleCNN(num_classes, width)
