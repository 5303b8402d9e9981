"""Exceptions raised by the export stage.

Both carry a one-line message meant to be printed as is; the underlying exporter or
runtime exception stays attached as ``__cause__`` for ``--verbose`` tracebacks.
"""

from __future__ import annotations


class ExportStageError(Exception):
    """Base class: a model could not be turned into a trustworthy ONNX file."""


class ExportError(ExportStageError):
    """PyTorch -> ONNX conversion failed, or the produced/given ONNX file is unusable."""


class ParityError(ExportStageError):
    """The ONNX model's outputs do not match PyTorch's within tolerance."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message, for one-line reports."""
    for line in str(exc).splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return type(exc).__name__
