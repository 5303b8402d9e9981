"""The recover pass: the pruned model trained back on --train-data (compress/recovery.py), in place."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..config import CompressConfig
from .load import Loaded, Plan
from .prune import Pruned
from .timing import Timer

log = logging.getLogger("compress")


@dataclass(frozen=True)
class Recovered:
    record: dict | None = field(default=None, repr=False)   # the report's pruning.recovery (None: not run)


def recover(config: CompressConfig, plan: Plan, loaded: Loaded, pruned: Pruned, timer: Timer) -> Recovered:
    """Runs when something was pruned and --train-data was given; the recovery options were checked by `plan`."""
    if not (pruned.pruned and config.recover.train_data):
        return Recovered()
    from ..recovery import load_training_data, recover as train

    info, data, c = loaded.model.arch_info, config.calibration, config.recover
    train_set = load_training_data(c.train_data, tuple(loaded.shape[1:]), data.mean or (info.mean if info else None),
                                   data.std or (info.std if info else None), c.train_samples, config.seed)
    with timer.stage("recover"):
        result = train(pruned.model, loaded.model.module, train_set, plan.recovery, progress=config.output.progress,
                       log=log.info)
    return Recovered(result.to_dict())
