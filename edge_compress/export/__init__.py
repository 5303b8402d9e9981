"""Export stage: PyTorch -> ONNX at a given opset, onnx-simplifier, parity vs PyTorch.

Depends only on torch, onnx, onnxsim, onnxruntime and numpy, never on the rest of
the project, so it can be used (and tested) on its own.
"""

from .errors import ExportError, ExportStageError, ParityError
from .onnx_export import ExportResult, export_onnx
from .parity import ParityResult, check_parity, tolerance_for
from .simplify import SimplifyResult, simplify_onnx

__all__ = [
    "ExportError",
    "ExportResult",
    "ExportStageError",
    "ParityError",
    "ParityResult",
    "SimplifyResult",
    "check_parity",
    "export_onnx",
    "simplify_onnx",
    "tolerance_for",
]
