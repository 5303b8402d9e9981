"""Static INT8 (QDQ) quantization for ONNX Runtime: a real quantized model, its error and its latency."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from edge_compress.deploy.errors import DeployError
from edge_compress.deploy.builders.ort_quant import quantize_int8
from edge_compress.deploy.runners.ort import OrtRunner
from edge_compress.export import export_onnx


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory):
    from edge_compress.compress.archs import get_arch
    from edge_compress.compress.example import make_dataset, to_tensor

    torch.manual_seed(0)
    model = get_arch("example-cnn").factory(width=16).eval()
    x, _ = make_dataset(64, seed=3)
    data = to_tensor(x)
    path = tmp_path_factory.mktemp("q") / "model.onnx"
    export_onnx(model, data[:1], path, opset=17)
    return path, data.numpy()


def test_int8_qdq_model_is_written_and_close_to_float(fp32_model, tmp_path):
    path, data = fp32_model
    out = tmp_path / "model.int8.onnx"
    res = quantize_int8(path, out, data[:32], check_inputs=data[32:])
    model = onnx.load(out)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert res.format == "QDQ" and res.calibration_samples == 32 and res.check_samples == 32
    assert 0 < res.max_abs_error < 1.0            # quantized: not identical, but close on real inputs
    assert res.top1_agreement is not None and res.top1_agreement >= 0.8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    with OrtRunner(out, providers=("CPUExecutionProvider",), threads=1) as runner:
        stats = runner.measure({runner.input_names[0]: data[:1]}, warmup_runs=5, timed_runs=20)
    assert stats.runs == 20 and stats.median_ms > 0


def test_int8_refuses_empty_or_nan_calibration(fp32_model, tmp_path):
    path, data = fp32_model
    with pytest.raises(DeployError, match="at least one batch"):
        quantize_int8(path, tmp_path / "q.onnx", data[:0])
    bad = data[:4].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(DeployError, match="NaN"):
        quantize_int8(path, tmp_path / "q.onnx", bad)
    with pytest.raises(DeployError, match="unknown calibration method"):
        quantize_int8(path, tmp_path / "q.onnx", data[:4], method="kl")
    assert not (tmp_path / "q.onnx").exists()
