"""Numerical parity of an ONNX file (run by ONNX Runtime on CPU) against the PyTorch model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from .errors import ParityError
from .onnx_export import flatten_outputs
from .torch_mode import eval_mode

_PROVIDER = "CPUExecutionProvider"

# (atol, rtol). Pass/fail uses rtol only (see check_parity); atol is reported alongside.
# fp32: the two runtimes differ only in summation order. fp16: ~3 decimal digits of
# mantissa. int8: 256 levels per tensor, a few steps of error after many layers.
_TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-4, 1e-4),
    "fp16": (1e-2, 1e-2),
    "int8": (5e-2, 5e-2),
}


def tolerance_for(precision: str) -> tuple[float, float]:
    """(atol, rtol) for ``"fp32"``, ``"fp16"`` or ``"int8"``."""
    try:
        return _TOLERANCES[precision]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(_TOLERANCES)}") from None


@dataclass(frozen=True)
class OutputParity:
    """One ONNX output against the model's tensor of the same name, on its own scale."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float  # max_abs / scale
    scale: float    # max |reference| of this output
    passed: bool
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "max_abs": _finite_or_none(self.max_abs),
            "max_rel": _finite_or_none(self.max_rel),
            "scale": _finite_or_none(self.scale),
            "passed": self.passed,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ParityResult:
    """The worst output's numbers (``max_abs``, ``max_rel``; ``passed`` when every output passed) and, in
    ``outputs``, each output's own."""

    max_abs: float
    max_rel: float
    atol: float
    rtol: float
    samples: int
    passed: bool
    runtime: str
    reason: str | None = None  # why it failed beyond the numbers (non-finite output, shape)
    outputs: tuple[OutputParity, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        # JSON has no NaN/Infinity; a non-finite error is reported as null and explained by reason.
        return {
            "max_abs": _finite_or_none(self.max_abs),
            "max_rel": _finite_or_none(self.max_rel),
            "atol": self.atol,
            "rtol": self.rtol,
            "samples": self.samples,
            "passed": self.passed,
            "runtime": self.runtime,
            "reason": self.reason,
            "outputs": [o.to_dict() for o in self.outputs],
        }

    def raise_if_failed(self) -> None:
        if self.passed:
            return
        why = f"; {self.reason}" if self.reason else ""
        failed = [o.name for o in self.outputs if not o.passed]
        which = f" (output{'s' if len(failed) > 1 else ''} {', '.join(failed[:5])})" if len(self.outputs) > 1 else ""
        raise ParityError(
            f"ONNX output differs from PyTorch over {self.samples} samples{which}: "
            f"max_rel={self.max_rel:.3g} (rtol {self.rtol:g}), max_abs={self.max_abs:.3g} (atol {self.atol:g}) "
            f"on {self.runtime}{why}"
        )


def check_parity(
    onnx_path: str | Path,
    model: torch.nn.Module,
    inputs: torch.Tensor,
    atol: float,
    rtol: float,
    batch_size: int = 1,
) -> ParityResult:
    """Compare ONNX Runtime (CPU) and PyTorch (eval, no grad, float32) outputs on ``inputs``.

    ``inputs`` is (N, ...) and is fed in chunks of ``batch_size`` (exported models
    often have a fixed batch of 1). The model may return a tensor or a tuple, list or
    dict of tensors; each ONNX output is compared with the model's tensor of the same
    name (``export.flatten_outputs``; by position when the names differ), each on its
    own scale. ``max_abs`` is the largest absolute difference; ``max_rel`` is
    ``max_abs / max(|reference|)`` over the whole output, i.e. relative to the
    output's scale: per-element relative error divides by near-zero logits and flags
    harmless differences (and a box output's scale is not its class scores'). An
    output passes with finite values on both sides, equal shapes and
    ``max_rel <= rtol``; ``atol`` is informational. The result's top-level numbers are
    the worst output's, ``passed`` is every output's, and ``outputs`` has each one.
    Does not raise on a mismatch: call ``raise_if_failed()``.
    """
    samples = _validate(inputs, batch_size)
    runtime = f"onnxruntime {ort.__version__} {_PROVIDER}"
    session = ort.InferenceSession(str(onnx_path), providers=[_PROVIDER])
    if len(session.get_inputs()) != 1:
        raise ValueError("check_parity supports ONNX models with one input")
    feed_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    _check_fixed_batch(session.get_inputs()[0].shape, samples, batch_size)
    device = next(model.parameters(), torch.empty(0)).device
    got: list[list[np.ndarray]] = [[] for _ in names]
    want: list[list[np.ndarray]] = [[] for _ in names]
    with eval_mode(model), torch.no_grad():
        for chunk in torch.split(inputs.detach().to(torch.float32).cpu(), batch_size):
            for i, array in enumerate(session.run(None, {feed_name: chunk.numpy()})):
                got[i].append(array)
            structure = model(chunk.to(device))
            reference = _by_name(flatten_outputs(structure, names[0] if len(names) == 1 else "output",
                                                 reserved=(feed_name,)), names)
            for i, tensor in enumerate(reference):
                want[i].append(tensor.detach().to(torch.float32).cpu().numpy())
    per_output = tuple(_compare_one(name, np.concatenate(g), np.concatenate(w), rtol)
                       for name, g, w in zip(names, got, want))
    worst = max(per_output, key=lambda o: (not o.passed, _nan_high(o.max_rel)))
    reasons = [f"{o.name}: {o.reason}" if len(per_output) > 1 else o.reason for o in per_output if o.reason]
    return ParityResult(max(_nan_high(o.max_abs) for o in per_output), _nan_high(worst.max_rel), float(atol),
                        float(rtol), samples, all(o.passed for o in per_output), runtime,
                        "; ".join(reasons) if reasons else None, per_output)


def _by_name(pairs: list[tuple[str, torch.Tensor]], names: list[str]) -> list[torch.Tensor]:
    """The model's tensors in the ONNX outputs' order: by name, or by position when the names differ."""
    if len(pairs) != len(names):
        raise ValueError(f"the model returns {len(pairs)} tensors ({', '.join(n for n, _ in pairs[:6])}) but the "
                         f"ONNX model has {len(names)} outputs ({', '.join(names[:6])})")
    by_name = dict(pairs)
    if set(by_name) == set(names):
        return [by_name[n] for n in names]
    return [t for _, t in pairs]


def _nan_high(value: float) -> float:
    return math.inf if math.isnan(value) else value


def _validate(inputs: torch.Tensor, batch_size: int) -> int:
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError(f"inputs is empty (shape {tuple(inputs.shape)}): parity needs at least one sample")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    return int(inputs.shape[0])


def _check_fixed_batch(shape: list[Any], samples: int, batch_size: int) -> None:
    fixed = shape[0] if shape and isinstance(shape[0], int) else None
    if fixed is None:
        return
    if fixed != batch_size or samples % batch_size:
        raise ValueError(
            f"the ONNX model has a fixed batch of {fixed}: use batch_size={fixed} "
            f"and a sample count divisible by it (got batch_size={batch_size}, {samples} samples)"
        )


def _compare_one(name: str, got: np.ndarray, want: np.ndarray, rtol: float) -> OutputParity:
    def result(max_abs: float, max_rel: float, scale: float, passed: bool, reason: str | None) -> OutputParity:
        return OutputParity(name, tuple(int(d) for d in want.shape), max_abs, max_rel, scale, passed, reason)

    if got.shape != want.shape:
        return result(math.inf, math.inf, math.nan, False,
                      f"output shapes differ: onnx {got.shape} vs torch {want.shape}")
    bad = [name for name, arr in (("onnxruntime", got), ("pytorch", want)) if not np.isfinite(arr).all()]
    if got.size == 0:
        return result(0.0, 0.0, 0.0, not bad, None)
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    finite = np.isfinite(diff)
    max_abs = float(diff[finite].max()) if finite.any() else math.inf
    scale = float(np.abs(want[np.isfinite(want)]).max()) if np.isfinite(want).any() else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    if bad:
        return result(max_abs, max_rel, scale, False, f"non-finite values (NaN/Inf) in the {' and '.join(bad)} output")
    return result(max_abs, max_rel, scale, max_rel <= rtol, None)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
