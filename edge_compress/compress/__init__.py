"""Edge deployment compiler for CNNs: prune to a device budget, export, build, measure, report."""
from __future__ import annotations

__version__ = "0.1.0"

# Imported lazily: `compress --help` and `--list-targets` should not pay for torch and torch-pruning.
__all__ = ["compress", "validate", "load_pruned", "CompressConfig", "CompressResult", "__version__"]


def __getattr__(name: str):
    if name in ("compress", "validate", "load_pruned", "CompressConfig"):
        from . import api
        return getattr(api, name)
    if name == "CompressResult":
        from .passes.report import CompressResult
        return CompressResult
    raise AttributeError(f"module 'compress' has no attribute {name!r}")
