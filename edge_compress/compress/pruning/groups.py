"""What the pruner records per coupled group, in the original channel numbering."""
from __future__ import annotations

from dataclasses import dataclass, field

@dataclass(frozen=True)
class GroupLayers:
    """Per group root: the layers losing output channels as (layer, its idxs, the root's idxs), and those
    losing input channels, sorted by name, as (layer, its input idxs, the root's idxs)."""
    producers: dict
    reads: dict


@dataclass
class GroupInfo:
    root: str                  # name of the layer whose output channels define the group
    original_channels: int
    channels: int              # current
    members: list[str]         # every layer the group touches
    prunable: bool = True
    reason: str = ""           # why it is left unpruned
    kept: list[int] = field(default_factory=list)  # original channel indices still present, in order
    divisor: int = 1           # grouped convs / chunk parts: channels go at the same positions from each part
    block: int = 1             # GroupNorm: channels go in whole normalisation groups of `block` (within each part)
    chunks: int = 1            # torch.chunk parts (in divisor): each part is a layer's width, rounded on its own

    def __post_init__(self):
        if not self.kept:
            self.kept = list(range(self.channels))

    def to_dict(self) -> dict:
        return {"root": self.root, "original_channels": self.original_channels, "channels": self.channels,
                "members": self.members, "prunable": self.prunable, "reason": self.reason}
