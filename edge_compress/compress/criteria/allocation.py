"""Per-layer keep fractions from a criterion's own ones (CMI cutoffs, MIPP): how the uniform search
follows a criterion that says how many channels each layer needs."""
from __future__ import annotations

from ..pruning.groups import GroupInfo


def layer_keep_fractions(groups: list[GroupInfo], own: dict[str, float] | None,
                         keep_fraction: float) -> dict[str, float]:
    """Per-group keep fractions for an overall keep fraction of the groups' original channels.

    Uniform without the criterion's own per-group fractions f_g. With them, every group follows one curve
    keep_g(u) = f_g + (1 - f_g) u for u >= 0 and f_g (1 + u) for u < 0, with u in [-1, 1] solved so that
    the channel-weighted mean equals `keep_fraction`: at the criterion's own point all groups sit at
    f_g; beyond it, all shrink in proportion to f_g.
    """
    if not own:
        return {g.root: keep_fraction for g in groups}
    f = {g.root: min(1.0, max(0.0, own.get(g.root, 1.0))) for g in groups}
    total = sum(g.original_channels for g in groups)

    def at(u: float) -> dict[str, float]:
        return {r: (fr + (1 - fr) * u) if u >= 0 else fr * (1 + u) for r, fr in f.items()}

    lo, hi = -1.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        mean = sum(at(mid)[g.root] * g.original_channels for g in groups) / total
        lo, hi = (mid, hi) if mean < keep_fraction else (lo, mid)
    return at((lo + hi) / 2)
