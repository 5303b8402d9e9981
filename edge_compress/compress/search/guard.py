"""The accuracy limit (--max-accuracy-drop, --min-agreement): a budget like latency, which the search respects.

Where it is measured: on a held-out quarter of the calibration data (every fourth sample, so an image folder
read class by class gives every class its share). The criterion scores channels and BatchNorm is re-estimated
on the other three quarters only, so the limit does not judge the model on the samples that chose its
channels; the report's accuracy section is measured on the same held-out samples with the same statistics.

What it measures (compress/accuracy.py computes the numbers):

- --max-accuracy-drop P: percentage points lost of top-1 (classifiers) or of the mean IoU (per-pixel classes)
  against the data's labels; without labels, against the original's predictions, where the original scores
  100 %, so the drop is 100 - agreement (classifiers) or 100 - the mean IoU against the original's class maps;
- --min-agreement A: the percent of held-out samples whose top-1 class is the original's (classifiers), or the
  mean IoU of the class maps against the original's (per-pixel classes), at least A.

Models whose outputs are neither (boxes, embeddings, several outputs) have no class to agree on: both limits
are refused for them (their relative L2 error and cosine similarity are still in the report).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import accuracy as acc
from ..errors import InputError

HELD_OUT_EVERY = 4                 # every 4th calibration sample is held out for the limit
MIN_HELD_OUT = 8                   # fewer samples make each one worth more than a typical limit
MAX_CACHED_OUTPUT_VALUES = 16_000_000   # the original's outputs are kept (not recomputed) below this size
TOLERANCE = 1e-9                   # a limit met exactly is met, whatever the last bit of the division says


def held_out_split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the samples the search may use, and of those held out for the accuracy limit."""
    idx = torch.arange(n)
    held = idx % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    return idx[~held], idx[held]


def check_held_out(n: int, flag: str) -> None:
    held = len(held_out_split(n)[1])
    if held < MIN_HELD_OUT:
        raise InputError(f"{flag} is measured on every {HELD_OUT_EVERY}th calibration sample, which gives {held} of "
                         f"{n}; pass at least {MIN_HELD_OUT * HELD_OUT_EVERY} samples (--calib-samples, --calib)")


@dataclass(frozen=True)
class GuardCheck:
    """One model measured against the limit: `value` is the drop in points (--max-accuracy-drop) or the agreement
    in percent (--min-agreement)."""
    value: float
    ok: bool
    accuracy: dict          # accuracy.evaluate's result on the held-out samples


class AccuracyGuard:
    def __init__(self, flag: str, limit: float, original, x: torch.Tensor, labels: torch.Tensor | None,
                 task: acc.Task):
        if task.kind == acc.OUTPUTS:
            raise InputError(f"{flag} needs a model whose output is class scores, (N, classes) or per pixel (N, "
                             f"classes, H, W); this one has {task.describe()}, which have no class to keep: drop "
                             "the limit (the report gives their relative L2 error and cosine similarity)")
        self.flag, self.limit, self.task = flag, limit, task
        self.original, self.x, self.labels = original, x, labels
        self.reference = acc.reference_outputs(original, x, MAX_CACHED_OUTPUT_VALUES)

    @property
    def samples(self) -> int:
        return len(self.x)

    def check(self, model) -> GuardCheck:
        was_training = model.training
        model.eval()
        try:
            result = acc.evaluate(self.original, model, self.x, self.labels, self.task, self.reference)
        finally:
            model.train(was_training)
        value = self._value(result)
        ok = value <= self.limit + TOLERANCE if self.drop else value >= self.limit - TOLERANCE
        return GuardCheck(value, ok, result)

    @property
    def drop(self) -> bool:
        return self.flag == "--max-accuracy-drop"

    def _value(self, r: dict) -> float:
        vs_original = r["agreement_with_original"] if self.task.kind == acc.CLASSIFICATION else r["miou_vs_original"]
        if not self.drop:
            return 100.0 * vs_original
        if r["against"] == "labels":
            return 100.0 * (r["metric_original"] - r["metric_final"])
        return 100.0 * (1.0 - r["metric_final"])

    def describe(self, value: float) -> str:
        """'top-1 drop 1.6 points (limit 2)', 'agreement 96.9 % (limit >= 95 %)'."""
        if self.drop:
            what = self._measure_name()
            return f"{what} drop {value:.2f} points (limit {self.limit:g})"
        what = "agreement with the original" if self.task.kind == acc.CLASSIFICATION else \
            "mIoU against the original's class maps"
        return f"{what} {value:.2f} % (limit >= {self.limit:g} %)"

    def _measure_name(self) -> str:
        metric = "top-1" if self.task.kind == acc.CLASSIFICATION else "mIoU"
        if self.labels is None:
            metric = "agreement" if self.task.kind == acc.CLASSIFICATION else "mIoU against the original"
        return metric

    def record(self, check: GuardCheck, binding: bool) -> dict:
        """The report's accuracy.guard section."""
        return {"flag": self.flag, "limit": self.limit, "unit": "points" if self.drop else "percent",
                "value": check.value, "met": check.ok, "binding": binding,
                "measure": self._measure_text(), "samples": self.samples,
                "held_out": f"every {HELD_OUT_EVERY}th calibration sample, not used to score channels or to "
                            "re-estimate BatchNorm"}

    def _measure_text(self) -> str:
        if not self.drop:
            return ("percent of samples whose top-1 class is the original's" if self.task.kind == acc.CLASSIFICATION
                    else "mean IoU (percent) of the argmax class maps against the original's")
        against = "the labels" if self.labels is not None else "the original's predictions (100 % for the original)"
        metric = "top-1" if self.task.kind == acc.CLASSIFICATION else "mean IoU"
        return f"percentage points of {metric} lost, against {against}"
