"""What `--criterion auto` (the default) stands for, by what the run has: the choice and its reasons are
measured in BENCHMARKS.md, "Information criteria study"."""
from __future__ import annotations

# With calibration data and recovery training (--train-data) to follow: the criterion that kept the most
# accuracy after the short recovery.
WITH_RECOVERY_DEFAULT = "capacity-independence"
# With calibration data and no recovery: the accuracy right after pruning is what ships.
ONE_SHOT_DEFAULT = "consumer-mi"
# Without calibration data no information can be measured: the best data-free criterion.
DATA_FREE_DEFAULT = "l1"


def resolve_criterion(name: str, have_data: bool, will_train: bool = False) -> tuple[str, str | None]:
    """The criterion `name` stands for, and a note for the report saying why when it is `auto`."""
    if name != "auto":
        return name, None
    if have_data and will_train:
        return WITH_RECOVERY_DEFAULT, (f"--criterion auto used {WITH_RECOVERY_DEFAULT} weighted by L1: with recovery "
                                       f"training it kept the most accuracy after training (BENCHMARKS.md)")
    if have_data:
        return ONE_SHOT_DEFAULT, (f"--criterion auto used {ONE_SHOT_DEFAULT}: without --train-data the model ships as "
                                  "pruned, and it kept the most accuracy one-shot (BENCHMARKS.md)")
    return DATA_FREE_DEFAULT, (f"--criterion auto ranked channels by {DATA_FREE_DEFAULT} magnitude because no --calib "
                               f"was given; with calibration data it uses {ONE_SHOT_DEFAULT} (or {WITH_RECOVERY_DEFAULT} "
                               "with --train-data), more accurate (BENCHMARKS.md)")
