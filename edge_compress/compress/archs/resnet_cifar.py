"""CIFAR ResNet-20/32/44/56 (He et al. 2016, section 4.2) with "option A" shortcuts.

Key names match the pretrained weights in ../shared/models (after stripping `module.`). The option-A
shortcut subsamples and zero-pads channels without parameters; pruners that do not understand the pad
break on it, which is why it is here, and why it carries its channel map (compress/pruning/shortcuts.py
prunes it through that map).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_arch


class PadShortcut(nn.Module):
    """Option-A shortcut: every second pixel, the channels placed by a channel map, zeros elsewhere.

    `channel_map[i]` is the input channel at output position i, or -1 for a zero channel. The original map
    pads `pad` zero channels on each side, and runs as exactly that `F.pad` (the ONNX graph of the unpruned
    model is unchanged); pruning drops input channels (their positions become zeros) and output positions,
    and the map then runs as a pad of one zero channel and a gather (ONNX Pad + Gather).
    """

    def __init__(self, in_channels: int, pad: int):
        super().__init__()
        self.pad = pad
        self.source_in_channels = in_channels   # what the model's code built; a rebuild checks against it
        self.register_buffer("index", torch.zeros(0, dtype=torch.long), persistent=False)
        self.set_channel_map(in_channels, [-1] * pad + list(range(in_channels)) + [-1] * pad)

    @property
    def out_channels(self) -> int:
        return len(self.channel_map)

    def set_channel_map(self, in_channels: int, channel_map: list[int]) -> None:
        if type(in_channels) is not int or in_channels < 1 or not all(type(s) is int and -1 <= s < in_channels
                                                                      for s in channel_map):
            raise ValueError(f"a channel map from {in_channels} input channels must hold -1 or an input channel "
                             f"in 0..{in_channels - 1}")
        self.in_channels, self.channel_map = in_channels, list(channel_map)
        zero = in_channels   # the index of the one zero channel padded at the end
        self.index = torch.tensor([zero if s < 0 else s for s in channel_map], dtype=torch.long,
                                  device=self.index.device)

    def is_contiguous_pad(self) -> bool:
        p = (self.out_channels - self.in_channels) // 2
        return p >= 0 and self.channel_map == [-1] * p + list(range(self.in_channels)) + [-1] * p

    def drop_inputs(self, idxs) -> None:
        """Input channels `idxs` go: the positions they fed become zeros, the rest are renumbered."""
        gone = set(int(i) for i in idxs)
        new = {old: k for k, old in enumerate(c for c in range(self.in_channels) if c not in gone)}
        self.set_channel_map(len(new), [new.get(s, -1) if s >= 0 else -1 for s in self.channel_map])

    def drop_outputs(self, idxs) -> None:
        gone = set(int(i) for i in idxs)
        self.set_channel_map(self.in_channels, [s for i, s in enumerate(self.channel_map) if i not in gone])

    def zero_outputs(self, idxs) -> None:
        """Output positions `idxs` become zero channels (the pruner's trial makes a group's channels dead)."""
        gone = set(int(i) for i in idxs)
        self.set_channel_map(self.in_channels, [-1 if i in gone else s for i, s in enumerate(self.channel_map)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        if self.is_contiguous_pad():
            p = (self.out_channels - self.in_channels) // 2
            return F.pad(x, (0, 0, 0, 0, p, p))
        if min(self.channel_map) < 0:
            x = F.pad(x, (0, 0, 0, 0, 0, 1))
        return torch.index_select(x, 1, self.index)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels} channels" + \
            ("" if self.is_contiguous_pad() else f", map {self.channel_map}")


def stateless_leaf(m: nn.Module) -> bool:
    return not list(m.children()) and not list(m.parameters(recurse=False)) and not list(m.buffers(recurse=False))


def pad_of(module: nn.Module, shape: tuple[int, ...], trials: int = 2) -> int | None:
    """The pad p if `module` computes F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p)) on inputs of `shape`, else None.

    Only a user's parameterless leaf module qualifies (torch's own layers never do), and it must agree on
    random inputs of both signs: a module that only looks like the shortcut is left as it is."""
    if isinstance(module, PadShortcut) or type(module).__module__.startswith("torch.") or not stateless_leaf(module) \
            or len(shape) != 4:
        return None
    g = torch.Generator().manual_seed(0)
    pad = None
    for _ in range(trials):
        x = torch.randn(shape, generator=g)
        try:
            with torch.no_grad():
                y = module(x.clone())
        except Exception:  # noqa: BLE001 - a module that fails on its own input shape is not the shortcut
            return None
        if not isinstance(y, torch.Tensor) or y.dim() != 4 or (y.shape[1] - shape[1]) % 2 or y.shape[1] < shape[1]:
            return None
        p = (y.shape[1] - shape[1]) // 2
        expected = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p))
        if pad not in (None, p) or y.shape != expected.shape or not torch.equal(y, expected):
            return None
        pad = p
    return pad


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(in_planes, planes // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        for i, planes in enumerate((16, 32, 64), start=1):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 1 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


@register_arch("resnet20", description="CIFAR ResNet-20, option-A shortcuts (0.27 M params)")
def resnet20(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(20, num_classes)


@register_arch("resnet32", description="CIFAR ResNet-32, option-A shortcuts (0.46 M params)")
def resnet32(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(32, num_classes)


@register_arch("resnet44", description="CIFAR ResNet-44, option-A shortcuts (0.66 M params)")
def resnet44(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(44, num_classes)


@register_arch("resnet56", description="CIFAR ResNet-56, option-A shortcuts (0.85 M params)")
def resnet56(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(56, num_classes)
