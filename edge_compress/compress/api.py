"""The Python API: `compress`, `validate` and `load_pruned`. Keywords are the command line's long options without
the dashes (`--train-batch-size 32` -> `train_batch_size=32`); an unknown one is an InputError naming it."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import CompressConfig, ValidateConfig
from .model_io import load_pruned   # reloading a pruned model needs neither the pruner nor the passes

if TYPE_CHECKING:
    from .passes.report import CompressResult

__all__ = ["compress", "validate", "load_pruned", "CompressConfig"]


def compress(model: Any, **options) -> CompressResult:
    """Compress one model for one target; the Python form of `compress --target T model.pt`.

    `model` is a file path, an nn.Module used as it is (pass `example_input=` a tensor of the input's shape unless
    `calib` data or `input_shape` gives it) or a CompressConfig, e.g.
    `compress(model, example_input=torch.randn(1, 3, 32, 32), target="host", speedup=1.5)`.
    The caller's module is never modified: it is copied before anything runs.
    """
    from .pipeline import run

    if isinstance(model, CompressConfig):
        if options:
            raise TypeError("pass either a CompressConfig or keyword options, not both")
        return run(model)
    return run(CompressConfig.from_keywords(model=model, **options))


def validate(model: str | Path | ValidateConfig, **options):
    """Measure any ONNX model on a target (`compress validate model.onnx --target T`): against a budget
    (`latency_ms`, `memory_mb`, `params`), or a latency report only; returns a ValidateResult."""
    from .passes.load import ssh_device
    from .validate import validate as run_validate

    if isinstance(model, ValidateConfig):
        if options:
            raise TypeError("pass either a ValidateConfig or keyword options, not both")
        config = model
    else:
        config = ValidateConfig.from_keywords(model=model, **options)
    b = config.budget
    return run_validate(config.model, config.target, b.latency_ms, b.memory_mb, b.params, config.input_shape,
                        config.out, ssh_device(config.measure), config.seed)
