"""Edge deployment compiler for CNNs: prune to a device budget, export, build, measure, report."""
from __future__ import annotations

__version__ = "0.1.0"

# Imported lazily: `compress --help` and `--list-targets` should not pay for torch and torch-pruning.
__all__ = ["compress", "CompressOptions", "CompressResult", "load_pruned", "__version__"]


def __getattr__(name: str):
    if name in ("compress", "CompressResult"):
        from . import pipeline
        return getattr(pipeline, name)
    if name == "CompressOptions":
        from .options import CompressOptions
        return CompressOptions
    if name == "load_pruned":
        from .model_io import load_pruned
        return load_pruned
    raise AttributeError(f"module 'compress' has no attribute {name!r}")
