"""Static INT8 quantization for ONNX Runtime: QDQ format, calibrated on real inputs.

The pre-processing step (symbolic shape inference and graph optimisation) comes first, as ONNX
Runtime's quantization guide asks; activations are calibrated on the calibration set by MinMax (or
entropy / percentile), weights per channel. The result states how far the quantized model's outputs
move from the float model's on the same inputs (max abs error and top-1 agreement), so a report can
record the accuracy change next to the latency change.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import onnxruntime as ort

from edge_compress.deploy.atomic import atomic_path, sha256_file
from edge_compress.deploy.errors import DeployError

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class QuantResult:
    path: Path
    format: str
    calibration_method: str
    calibration_samples: int
    per_channel: bool
    max_abs_error: float          # against the float model, on the check inputs
    top1_agreement: float | None  # share of check inputs whose argmax agrees (classifiers)
    check_samples: int
    preprocessed: bool
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over an array of samples, one batch at a time."""

    def __init__(self, input_name: str, samples: np.ndarray, batch_size: int):
        self._batches = iter([samples[i:i + batch_size] for i in range(0, len(samples), batch_size)])
        self._name = input_name

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {self._name: batch.astype(np.float32)}


def quantize_int8(onnx_path: str | os.PathLike[str], out_path: str | os.PathLike[str], calibration: np.ndarray,
                  check_inputs: np.ndarray | None = None, method: str = "minmax", per_channel: bool = True,
                  batch_size: int = 1) -> QuantResult:
    """Quantize `onnx_path` to INT8 QDQ at `out_path` (written atomically), calibrated on `calibration`.

    `batch_size` must match the model's input batch when that is static (1 for the pipeline's models).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise DeployError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.size == 0 or len(calibration) < batch_size:
        raise DeployError("INT8 calibration needs at least one batch of calibration samples; pass --calib")
    if not np.isfinite(calibration).all():
        raise DeployError("the INT8 calibration data contains NaN or inf; clean it before quantizing")
    src = Path(onnx_path)
    input_name = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    usable = (len(calibration) // batch_size) * batch_size
    with tempfile.TemporaryDirectory(prefix="compress-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        preprocessed = True
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantize the model as it is
            pre, preprocessed = src, False
        calib_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                        "percentile": CalibrationMethod.Percentile}[method]
        with atomic_path(out_path) as tmp_out:
            try:
                quantize_static(str(pre), str(tmp_out), _Reader(input_name, calibration[:usable], batch_size),
                                quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                                weight_type=QuantType.QInt8, per_channel=per_channel, calibrate_method=calib_method)
            except Exception as e:  # noqa: BLE001 - say which model failed and why, in one line
                raise DeployError(f"INT8 quantization of {src.name} failed ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    out = Path(out_path)
    checks = calibration[:usable] if check_inputs is None else np.asarray(check_inputs, dtype=np.float32)
    err, agree, n = _compare(src, out, input_name, checks, batch_size)
    return QuantResult(out, "QDQ", method, usable, per_channel, err, agree, n, preprocessed, sha256_file(out))


def _outputs(path: Path, name: str, batches: Iterable[np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {name: b})[0] for b in batches])


def _compare(fp32: Path, int8: Path, name: str, inputs: np.ndarray, batch_size: int) -> tuple[float, float | None, int]:
    usable = (len(inputs) // batch_size) * batch_size
    batches = [inputs[i:i + batch_size] for i in range(0, usable, batch_size)]
    a, b = _outputs(fp32, name, batches), _outputs(int8, name, batches)
    err = float(np.abs(a - b).max()) if a.size else 0.0
    agree = float((a.reshape(len(a), -1).argmax(1) == b.reshape(len(b), -1).argmax(1)).mean()) \
        if a.ndim == 2 and a.shape[1] > 1 else None
    return err, agree, usable
