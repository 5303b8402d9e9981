"""Tests for export/: real torch, onnx, onnxsim and onnxruntime on tiny models built here."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from onnx import numpy_helper as nh

from edge_compress.export import (
    ExportError,
    ParityError,
    check_parity,
    export_onnx,
    simplify_onnx,
    tolerance_for,
)
from edge_compress.export.atomic import atomic_write_bytes

FP32_ATOL, FP32_RTOL = tolerance_for("fp32")


# --- tiny models -----------------------------------------------------------------------


def _randomise_bn(module: torch.nn.Module) -> None:
    # Fresh BatchNorm is the identity in eval mode; random statistics make it matter.
    for bn in module.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)


class SmallNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.AdaptiveAvgPool2d(1),
        )
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


class ResidualNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)) + x)
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(y, 1), 1))


class ViewNet(torch.nn.Module):
    """``view(size(0), -1)`` leaves a Constant shape node that onnxsim folds away."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.fc(y.view(y.size(0), -1))


class Spectrum(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # linalg_svd has no ONNX symbolic in the TorchScript exporter (any opset) nor an
        # ONNX function in the dynamo exporter: a genuine unsupported op.
        return torch.linalg.svd(x)[1]


class SvdNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
        self.head = torch.nn.ModuleDict({"spec": Spectrum()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head["spec"](self.block(x))


def _make(cls: type[torch.nn.Module]) -> torch.nn.Module:
    torch.manual_seed(0)
    model = cls()
    with torch.no_grad():
        _randomise_bn(model)
    return model.eval()


@pytest.fixture
def example() -> torch.Tensor:
    return torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def samples() -> torch.Tensor:
    return torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(2))


def _ort_run(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


# --- export ----------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("cls", [SmallNet, ResidualNet])
def test_export_at_opset_checks_and_matches_pytorch(tmp_path, example, samples, cls, opset):
    model = _make(cls)
    result = export_onnx(model, example, tmp_path / "m.onnx", opset)

    saved = onnx.load(str(result.path))
    onnx.checker.check_model(saved, full_check=True)
    assert [(o.domain, o.version) for o in saved.opset_import if o.domain in ("", "ai.onnx")] == [("", opset)]
    assert result.opset == opset and result.exporter == "torchscript"
    assert result.input_shape == (1, 3, 16, 16) and result.output_shape == (1, 5)
    assert result.num_nodes == len(saved.graph.node)
    assert "Conv" in result.op_types and list(result.op_types) == sorted(set(result.op_types))
    if cls is ResidualNet:
        assert "Add" in result.op_types
    assert result.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()

    parity = check_parity(result.path, model, samples, FP32_ATOL, FP32_RTOL)
    assert parity.passed, parity
    assert parity.samples == 6 and parity.max_rel < 1e-5 and parity.max_abs < 1e-4
    json.dumps(result.to_dict(), allow_nan=False)


def test_opset_18_uses_the_dynamo_exporter(tmp_path, example, samples):
    model = _make(SmallNet)
    result = export_onnx(model, example, tmp_path / "m18.onnx", 18)
    saved = onnx.load(str(result.path))
    assert result.exporter == "dynamo"
    assert {o.version for o in saved.opset_import if o.domain in ("", "ai.onnx")} == {18}
    assert [i.name for i in saved.graph.input] == ["input"] and [o.name for o in saved.graph.output] == ["output"]
    assert check_parity(result.path, model, samples, FP32_ATOL, FP32_RTOL).passed
    again = export_onnx(model, example, tmp_path / "again.onnx", 18)
    assert again.path.read_bytes() == result.path.read_bytes()


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_scripted_module_exports_with_torchscript_exporter(tmp_path, example, samples):
    model = _make(SmallNet)
    result = export_onnx(torch.jit.script(model), example, tmp_path / "s.onnx", 13)
    assert result.exporter == "torchscript"
    assert check_parity(result.path, model, samples, FP32_ATOL, FP32_RTOL).passed


def test_reexport_is_byte_identical(tmp_path, example):
    model = _make(ResidualNet)
    first = export_onnx(model, example, tmp_path / "a.onnx", 13)
    second = export_onnx(model, example, tmp_path / "b.onnx", 13)
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.sha256 == second.sha256


def test_export_restores_training_flags(tmp_path, example):
    model = _make(SmallNet).train()
    model.features[1].eval()  # a deliberately frozen BatchNorm must stay frozen
    export_onnx(model, example, tmp_path / "m.onnx", 13)
    assert model.training and model.fc.training and not model.features[1].training


def test_unsupported_op_names_op_and_module_and_writes_nothing(tmp_path, example):
    target = tmp_path / "svd.onnx"
    with pytest.raises(ExportError) as info:
        export_onnx(_make(SvdNet), example, target, 13)
    message = str(info.value)
    assert "\n" not in message
    assert "aten::linalg_svd" in message and "opset 13" in message
    assert "'head.spec' (Spectrum)" in message
    assert "higher opset" in message and "replace the op" in message
    assert isinstance(info.value.__cause__, torch.onnx.errors.UnsupportedOperatorError)
    assert not target.exists()
    assert os.listdir(tmp_path) == []  # no temp file left behind either


def test_unsupported_op_with_dynamo_exporter_names_op_and_module(tmp_path, example):
    with pytest.raises(ExportError) as info:
        export_onnx(_make(SvdNet), example, tmp_path / "svd18.onnx", 18)
    message = str(info.value)
    assert "\n" not in message
    assert "aten::_linalg_svd" in message and "'head.spec' (Spectrum)" in message
    assert os.listdir(tmp_path) == []


def test_failed_export_keeps_previous_file(tmp_path, example):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous good model")
    with pytest.raises(ExportError):
        export_onnx(_make(SvdNet), example, target, 17)
    assert target.read_bytes() == b"previous good model"
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_atomic_write_removes_temp_file_when_rename_fails(tmp_path):
    occupied = tmp_path / "is_a_directory"
    occupied.mkdir()
    with pytest.raises(OSError):
        atomic_write_bytes(occupied, b"data")
    assert sorted(os.listdir(tmp_path)) == ["is_a_directory"] and os.listdir(occupied) == []


def test_invalid_arguments_are_refused(tmp_path, example):
    with pytest.raises(ValueError, match="opset"):
        export_onnx(_make(SmallNet), example, tmp_path / "m.onnx", 5)
    with pytest.raises(ValueError, match="batch"):
        export_onnx(_make(SmallNet), example[:0], tmp_path / "m.onnx", 13)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("opset", [13, 18])
def test_dynamic_batch_runs_at_batch_1_and_4(tmp_path, example, opset):
    model = _make(SmallNet)
    # A batch-1 example on purpose: the dynamo path must still produce a dynamic batch.
    result = export_onnx(model, example, tmp_path / "dyn.onnx", opset, dynamic_batch=True)
    assert isinstance(result.input_shape[0], str) and isinstance(result.output_shape[0], str)
    for batch in (1, 4):
        x = torch.randn(batch, 3, 16, 16)
        got = _ort_run(result.path, x)
        with torch.no_grad():
            want = model(x).numpy()
        assert got.shape == (batch, 5)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_static_export_rejects_other_batch_sizes(tmp_path, example):
    result = export_onnx(_make(SmallNet), example, tmp_path / "static.onnx", 13)
    with pytest.raises(Exception, match="Expected: 1"):
        _ort_run(result.path, torch.randn(4, 3, 16, 16))


# --- simplify --------------------------------------------------------------------------


def test_simplify_folds_nodes_and_keeps_parity(tmp_path):
    model = _make(ViewNet)
    exported = export_onnx(model, torch.randn(1, 3, 8, 8), tmp_path / "v.onnx", 13)
    result = simplify_onnx(exported.path, tmp_path / "v.sim.onnx", check_n=2)
    assert result.simplified and result.reason is None
    assert result.nodes_before == exported.num_nodes
    assert result.nodes_after < result.nodes_before
    onnx.checker.check_model(onnx.load(str(result.path)), full_check=True)
    assert check_parity(result.path, model, torch.randn(3, 3, 8, 8), FP32_ATOL, FP32_RTOL).passed
    json.dumps(result.to_dict(), allow_nan=False)


def test_simplify_is_deterministic_and_never_grows(tmp_path, example, samples):
    model = _make(ResidualNet)
    exported = export_onnx(model, example, tmp_path / "r.onnx", 13)
    first = simplify_onnx(exported.path, tmp_path / "r1.onnx")
    second = simplify_onnx(exported.path, tmp_path / "r2.onnx")
    assert first.simplified and first.nodes_after <= first.nodes_before
    assert first.path.read_bytes() == second.path.read_bytes()
    assert check_parity(first.path, model, samples, FP32_ATOL, FP32_RTOL).passed


def test_simplify_refuses_check_n_zero(tmp_path, example):
    exported = export_onnx(_make(SmallNet), example, tmp_path / "m.onnx", 13)
    with pytest.raises(ValueError, match="check_n"):
        simplify_onnx(exported.path, tmp_path / "out.onnx", check_n=0)
    assert not (tmp_path / "out.onnx").exists()


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model, full_check=True)
    path.write_bytes(model.SerializeToString())
    return path


def _cancelling_conv_bn(path: Path) -> Path:
    """Conv with bias 1e6 followed by BatchNorm subtracting 1e6.

    At 1e6 float32 steps are 1/16, so the unfused graph rounds its O(1) outputs to
    multiples of 1/16; folding BN into the conv cancels the offsets exactly. The
    simplification is correct algebra with a genuinely different numerical result.
    """
    rng = np.random.default_rng(0)
    weights = [
        nh.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        nh.from_array(np.full(4, 1e6, np.float32), "b"),
        nh.from_array(np.ones(4, np.float32), "scale"),
        nh.from_array(np.zeros(4, np.float32), "beta"),
        nh.from_array(np.full(4, 1e6, np.float32), "mean"),
        nh.from_array(np.ones(4, np.float32), "var"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w", "b"], ["c"]),
            helper.make_node("BatchNormalization", ["c", "scale", "beta", "mean", "var"], ["output"]),
        ],
        "cancel",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 6, 6])],
        weights,
    )
    # IR 8: onnx's default IR version is newer than onnxruntime (used by onnxsim) loads.
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)


def test_simplify_keeps_original_when_numerical_check_fails(tmp_path):
    source = _cancelling_conv_bn(tmp_path / "cancel.onnx")
    result = simplify_onnx(source, tmp_path / "cancel.sim.onnx", check_n=2)
    assert not result.simplified
    assert "numerical check" in result.reason and "\n" not in result.reason
    assert result.path.read_bytes() == source.read_bytes()
    assert result.nodes_after == result.nodes_before == 2


def test_simplify_keeps_original_when_onnxsim_fails(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["r"]), helper.make_node("Mystery", ["r"], ["output"], domain="com.example")],
        "custom",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3])],
    )
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)]
    source = _save(helper.make_model(graph, opset_imports=opsets, ir_version=8), tmp_path / "custom.onnx")
    result = simplify_onnx(source, tmp_path / "custom.sim.onnx")
    assert not result.simplified
    assert result.reason.startswith("onnxsim failed") and "Mystery" in result.reason
    assert result.path.read_bytes() == source.read_bytes()


def test_simplify_rejects_a_file_that_is_not_onnx(tmp_path):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"this is not a protobuf")
    with pytest.raises(ExportError, match="not a valid ONNX model"):
        simplify_onnx(bogus, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


# --- parity ----------------------------------------------------------------------------


def test_parity_detects_a_changed_weight(tmp_path, example, samples):
    model = _make(SmallNet)
    result = export_onnx(model, example, tmp_path / "m.onnx", 13)
    with torch.no_grad():
        model.fc.weight[0, 0] += 0.5
    parity = check_parity(result.path, model, samples, FP32_ATOL, FP32_RTOL)
    assert not parity.passed and parity.max_rel > FP32_RTOL and parity.max_abs > 0.01
    with pytest.raises(ParityError) as info:
        parity.raise_if_failed()
    message = str(info.value)
    assert "\n" not in message
    assert f"{parity.max_rel:.3g}" in message and f"{parity.max_abs:.3g}" in message
    assert f"{FP32_RTOL:g}" in message


def test_parity_fails_on_non_finite_output(tmp_path, example, samples):
    model = _make(SmallNet)
    result = export_onnx(model, example, tmp_path / "m.onnx", 13)
    with torch.no_grad():
        model.fc.bias[1] = float("nan")
    parity = check_parity(result.path, model, samples, FP32_ATOL, FP32_RTOL)
    assert not parity.passed and "non-finite" in parity.reason and "pytorch" in parity.reason
    json.dumps(parity.to_dict(), allow_nan=False)
    with pytest.raises(ParityError, match="non-finite"):
        parity.raise_if_failed()


def test_parity_in_chunks_on_a_dynamic_model(tmp_path, example, samples):
    model = _make(ResidualNet)
    result = export_onnx(model, example, tmp_path / "d.onnx", 13, dynamic_batch=True)
    parity = check_parity(result.path, model, samples, FP32_ATOL, FP32_RTOL, batch_size=4)
    assert parity.passed and parity.samples == 6
    assert parity.runtime == f"onnxruntime {ort.__version__} CPUExecutionProvider"
    parity.raise_if_failed()


def test_parity_refuses_empty_inputs_and_wrong_fixed_batch(tmp_path, example, samples):
    model = _make(SmallNet)
    result = export_onnx(model, example, tmp_path / "m.onnx", 13)
    with pytest.raises(ValueError, match="empty"):
        check_parity(result.path, model, samples[:0], FP32_ATOL, FP32_RTOL)
    with pytest.raises(ValueError, match="fixed batch of 1"):
        check_parity(result.path, model, samples, FP32_ATOL, FP32_RTOL, batch_size=2)


def test_tolerances():
    assert tolerance_for("fp32") == (1e-4, 1e-4)
    assert tolerance_for("fp16")[1] == 1e-2 and tolerance_for("int8")[1] == 5e-2
    with pytest.raises(ValueError, match="fp32, fp16, int8"):
        tolerance_for("bf16")
