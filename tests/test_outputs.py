"""Every output structure and every task (issue 20, items 2, 3, 4 and 6): models returning a tuple or a dict of
tensors, a U-Net with per-pixel labels, a model passed as an object, and an `--arch` from a torchvision-like
package, all through the real stages (Torch-Pruning, the ONNX exporter, onnx-simplifier, ONNX Runtime)."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edge_compress.compress.cli import main
from edge_compress.compress.report.schema import validate_report
from edge_compress.export import check_parity, export_onnx
from edge_compress.export.onnx_export import flatten_outputs, output_names_for

# The models live in a module of their own (written to a temporary folder and put on sys.path): `--arch` imports
# them by name, as a user's `package.module:callable`, and pickled modules find their class again.
ZOO = textwrap.dedent('''
    import torch
    import torch.nn as nn
    import torch.nn.functional as F


    def cbr(i, o, stride=1):
        return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


    class TwoHead(nn.Module):
        """A backbone with a classification head and a box-regression head: returns (logits, boxes)."""

        def __init__(self, width=8, classes=6, boxes=4):
            super().__init__()
            self.body = nn.Sequential(cbr(3, width), cbr(width, 2 * width, 2), cbr(2 * width, 2 * width),
                                      cbr(2 * width, 4 * width, 2))
            self.cls = nn.Linear(4 * width, classes)
            self.box = nn.Linear(4 * width, boxes)

        def features(self, x):
            return F.adaptive_avg_pool2d(self.body(x), 1).flatten(1)

        def forward(self, x):
            f = self.features(x)
            return self.cls(f), 10.0 * self.box(f)


    class DictHead(TwoHead):
        def forward(self, x):
            f = self.features(x)
            return {"class logits": self.cls(f), "boxes": 10.0 * self.box(f)}


    class TinyUNet(nn.Module):
        """Encoder, a downsampled middle, upsampling and a concatenated skip: per-pixel class scores."""

        def __init__(self, width=16, classes=3):
            super().__init__()
            self.enc1, self.enc2, self.mid = cbr(3, width), cbr(width, 2 * width, 2), cbr(2 * width, 2 * width)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.dec = cbr(3 * width, width)
            self.head = nn.Conv2d(width, classes, 1)

        def forward(self, x):
            a = self.enc1(x)
            return self.head(self.dec(torch.cat([a, self.up(self.mid(self.enc2(a)))], 1)))
''')

# A stand-in for torchvision: `--arch torchvision.models:resnet18 --arch-kwargs '{"num_classes": 10}'` must pass
# the keyword through wherever torchvision is installed; torchvision does not install here.
FAKEVISION = textwrap.dedent('''
    import torch.nn as nn


    class _Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.relu(x + self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


    class ResNet(nn.Module):
        def __init__(self, num_classes=1000, width=16):
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.layer1 = nn.Sequential(_Block(width), _Block(width))
            self.conv2 = nn.Conv2d(width, 2 * width, 3, 2, 1, bias=False)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2 * width, num_classes)

        def forward(self, x):
            x = self.layer1(self.relu(self.bn1(self.conv1(x))))
            return self.fc(self.avgpool(self.conv2(x)).flatten(1))


    def resnet18(*, weights=None, progress=True, **kwargs):
        assert weights is None, "no weights in the stand-in"
        return ResNet(**kwargs)
''')


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """The models' module, importable as `outputs_zoo`, and `fakevision.models`."""
    root = tmp_path_factory.mktemp("zoo")
    (root / "outputs_zoo.py").write_text(ZOO)
    (root / "fakevision").mkdir()
    (root / "fakevision" / "__init__.py").write_text("")
    (root / "fakevision" / "models.py").write_text(FAKEVISION)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        import outputs_zoo
        yield outputs_zoo
    for name in ("outputs_zoo", "fakevision", "fakevision.models"):
        sys.modules.pop(name, None)


def _with_statistics(model: torch.nn.Module, x: np.ndarray) -> torch.nn.Module:
    """BatchNorm statistics of the data (a cumulative average over one pass), as a trained model has."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(x))
    for m in norms:
        m.momentum = 0.1
    return model.eval()


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((48, 3, 32, 32)).astype(np.float32)


def _files(zoo, inputs, tmp_path: Path, name: str, labels=None, **kwargs) -> tuple[Path, Path]:
    torch.manual_seed(0)
    model = _with_statistics(getattr(zoo, name)(**kwargs), inputs)
    weights, calib = tmp_path / f"{name}.pt", tmp_path / f"{name}.npz"
    torch.save(model.state_dict(), weights)
    np.savez(calib, **({"x": inputs} if labels is None else {"x": inputs, "y": labels}))
    return weights, calib


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("compress: ")]


# --- several outputs through the command line ----------------------------------------------------------------

MULTI = {"TwoHead": ["output_0", "output_1"], "DictHead": ["class_logits", "boxes"]}


@pytest.mark.parametrize("target", ["host", "jetson-nano"])
@pytest.mark.parametrize("name", list(MULTI))
def test_multi_output_models_compress(zoo, inputs, tmp_path, capsys, name, target):
    labels = np.arange(len(inputs)) % 6 if name == "DictHead" else None   # labels a multi-output task cannot use
    weights, calib = _files(zoo, inputs, tmp_path, name, labels)
    out = tmp_path / "out"
    code, stdout, err = run_cli(["--target", target, "--arch", f"outputs_zoo:{name}", "--calib", calib,
                                 "--macs", "50%", "--out", out, weights], capsys)
    assert code == 0, err
    names = MULTI[name]
    graph = onnx.load(out / "model.onnx").graph
    assert [o.name for o in graph.output] == names and [i.name for i in graph.input] == ["input"]
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    assert report["final"]["macs"] <= 0.5 * report["original"]["macs"] + 1
    assert report["final"]["latency_kind"].startswith("measured" if target == "host" else "predicted")
    parity = report["export"]["parity"]
    assert parity["passed"] and [o["name"] for o in parity["outputs"]] == names
    assert all(o["passed"] and o["max_rel"] < 1e-4 and o["scale"] > 0 for o in parity["outputs"])
    assert parity["max_rel"] == max(o["max_rel"] for o in parity["outputs"])
    assert report["export"]["onnx"]["output_names"] == names
    acc = report["accuracy"]
    assert acc["task"] == "outputs" and acc["metric"] == "rel. L2 error" and acc["against"] == "original"
    assert [o["name"] for o in acc["outputs"]] == names
    assert all(o["rel_l2_error"] >= 0 and -1 <= o["cosine_similarity"] <= 1 for o in acc["outputs"])
    assert acc["metric_final"] == max(o["rel_l2_error"] for o in acc["outputs"])
    assert acc.get("labels_used", True) is (labels is None)
    assert "rel. L2 error" in stdout and "worst output" in stdout
    # The pruned model reloads (its architecture named, as the user would) and ONNX Runtime agrees per output.
    from edge_compress.compress.model_io import load_pruned
    pruned = load_pruned(out / "model.pruned.pt", arch=f"outputs_zoo:{name}")
    x = torch.from_numpy(inputs[:1])
    with torch.no_grad():
        want = dict(flatten_outputs(pruned(x)))
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for o, got in zip(sess.get_outputs(), sess.run(None, {"input": x.numpy()})):
        np.testing.assert_allclose(got, want[o.name].numpy(), rtol=1e-4, atol=1e-4 * float(want[o.name].abs().max()))
    if target == "jetson-nano":   # the device bundle checks every output
        expected = json.loads((out / "expected_output.json").read_text())
        assert [o["name"] for o in expected["outputs"]] == names and expected["output"] == expected["outputs"][0]
        assert report["engine"]["bundle"]["expected_outputs"].keys() == set(names)
    html = (out / "report.html").read_text()
    assert all(n in html for n in names) and "Rel. L2 error" in html


# --- segmentation ---------------------------------------------------------------------------------------------

def test_unet_with_pixel_labels_reports_mean_iou(zoo, inputs, tmp_path, capsys):
    labels = np.random.default_rng(1).integers(0, 3, (len(inputs), 32, 32)).astype(np.uint8)
    weights, calib = _files(zoo, inputs, tmp_path, "TinyUNet", labels)
    out = tmp_path / "out"
    code, stdout, err = run_cli(["--target", "jetson-nano", "--arch", "outputs_zoo:TinyUNet", "--calib", calib,
                                 "--macs", "50%", "--out", out, weights], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    acc = report["accuracy"]
    assert acc["task"] == "segmentation" and acc["metric"] == "mIoU" and acc["against"] == "labels"
    assert acc["labels_from"] == "data" and acc["classes"] == 3
    assert 0 <= acc["miou_final"] <= 1 and acc["metric_original"] == acc["miou_original"]
    assert 0 <= acc["agreement_with_original"] <= 1 and 0 <= acc["miou_vs_original"] <= 1
    assert f"mIoU {acc['miou_original']:.2f} -> {acc['miou_final']:.2f}" in stdout
    assert report["export"]["onnx"]["output_names"] == ["output"]


def test_unet_without_labels_is_compared_with_the_original(zoo, inputs, tmp_path, capsys):
    weights, calib = _files(zoo, inputs, tmp_path, "TinyUNet")
    out = tmp_path / "out"
    code, stdout, err = run_cli(["--target", "jetson-nano", "--arch", "outputs_zoo:TinyUNet", "--calib", calib,
                                 "--macs", "50%", "--out", out, weights], capsys)
    assert code == 0, err
    acc = json.loads((out / "report.json").read_text())["accuracy"]
    assert acc["task"] == "segmentation" and acc["against"] == "original" and acc["labels_from"] == "none"
    assert acc["metric_final"] == acc["miou_vs_original"] and "miou_final" not in acc
    assert "against the original's class maps" in stdout


@pytest.mark.parametrize("labels, why", [
    (np.zeros((48, 16, 16), np.int64), "pass labels at the output's resolution"),
    (np.full((48, 32, 32), 3), "labels go up to 3 but the model has 3 output channels"),
])
def test_segmentation_labels_that_do_not_fit_are_one_line(zoo, inputs, tmp_path, capsys, labels, why):
    weights, calib = _files(zoo, inputs, tmp_path, "TinyUNet", labels)
    code, _, err = run_cli(["--target", "jetson-nano", "--arch", "outputs_zoo:TinyUNet", "--calib", calib,
                            "--macs", "50%", "--out", tmp_path / "out", weights], capsys)
    assert code == 2 and len(error_lines(err)) == 1 and why in error_lines(err)[0], err
    assert not (tmp_path / "out").exists()


def test_label_criteria_refuse_per_pixel_tasks(zoo, inputs, tmp_path, capsys):
    labels = np.zeros((48, 32, 32), np.int64)
    weights, calib = _files(zoo, inputs, tmp_path, "TinyUNet", labels)
    code, _, err = run_cli(["--target", "jetson-nano", "--arch", "outputs_zoo:TinyUNet", "--calib", calib,
                            "--criterion", "taylor", "--macs", "50%", "--out", tmp_path / "out", weights], capsys)
    assert code == 2 and len(error_lines(err)) == 1 and "ranks channels by the class label" in err, err


# --- models as objects, and --arch from an installed package ----------------------------------------------------

def test_python_api_takes_a_model_object(zoo, inputs, tmp_path):
    from edge_compress.compress import compress

    model = _with_statistics(zoo.DictHead(width=8), inputs).train()   # the caller's mode must survive
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = compress(model, example_input=torch.randn(1, 3, 32, 32), target="jetson-nano", macs="50%",
                      out=tmp_path / "api", progress=False)
    assert result.exit_code == 0 and result.verdict == "met"
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    report = result.report
    validate_report(report)
    assert report["inputs"]["model"]["kind"] == "module" and report["inputs"]["input_shape"] == [1, 3, 32, 32]
    assert report["inputs"]["options"]["example_input"] == {"shape": [1, 3, 32, 32]}
    assert report["accuracy"]["evaluated"] is False   # no calibration data: nothing to measure it on
    pruned = torch.load(result.out_dir / "model.pruned.pt", weights_only=False)
    assert type(pruned) is zoo.DictHead and type(result.model) is zoo.DictHead
    assert sum(p.numel() for p in pruned.parameters()) == report["final"]["params"] < report["original"]["params"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = pruned.eval()(x), result.model(x)
    assert a.keys() == {"class logits", "boxes"} and all(torch.allclose(a[k], b[k]) for k in a)
    assert [o.name for o in onnx.load(result.out_dir / "model.onnx").graph.output] == ["class_logits", "boxes"]


def test_python_api_model_object_with_calibration(zoo, inputs, tmp_path):
    from edge_compress.compress import compress

    calib = tmp_path / "calib.npz"
    np.savez(calib, x=inputs, y=np.arange(len(inputs)) % 6)
    model = _with_statistics(zoo.TwoHead(width=8), inputs)
    result = compress(model, calib=str(calib), target="jetson-nano", macs="50%", out=tmp_path / "api",
                      progress=False)
    assert result.exit_code == 0
    assert result.report["accuracy"]["task"] == "outputs"
    assert result.report["inputs"]["input_shape"] == [1, 3, 32, 32]   # from the calibration data


@pytest.mark.parametrize("kwargs, why", [
    (dict(example_input=[1, 3, 32, 32]), "example_input must be a torch.Tensor"),
    (dict(example_input=torch.randn(3, 32)), "pass an (N, C, H, W) or (C, H, W) tensor"),
    (dict(), "the input shape is unknown"),
    (dict(example_input=torch.randn(1, 3, 32, 32), arch="example-cnn"), "needs neither"),
])
def test_python_api_bad_model_object_inputs_are_input_errors(zoo, tmp_path, kwargs, why):
    from edge_compress.compress import compress
    from edge_compress.compress.errors import InputError

    with pytest.raises(InputError, match=why.replace("(", r"\(").replace(")", r"\)")):
        compress(zoo.TwoHead(), target="jetson-nano", macs="50%", out=tmp_path / "x", progress=False, **kwargs)


def test_arch_from_a_torchvision_like_package_passes_kwargs(zoo, inputs, tmp_path, capsys):
    from fakevision.models import resnet18

    model = _with_statistics(resnet18(num_classes=10), inputs)
    weights = tmp_path / "resnet18.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "out"
    args = ["--target", "jetson-nano", "--arch", "fakevision.models:resnet18", "--input-shape", "1x3x32x32",
            "--macs", "50%", "--out", out]
    code, _, err = run_cli([*args, "--arch-kwargs", '{"num_classes": 10}', weights], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"]["model"]["arch"] == "fakevision.models:resnet18"
    assert report["inputs"]["model"]["arch_kwargs"] == {"num_classes": 10}
    assert report["export"]["onnx"]["output_shapes"] == [[1, 10]] and report["accuracy"]["evaluated"] is False
    # Without the keyword the stand-in builds 1000 classes, and the weights say 10: one line, exit 2.
    code, _, err = run_cli([*args[:-1], tmp_path / "out2", weights], capsys)
    assert code == 2 and len(error_lines(err)) == 1 and "fc.weight" in error_lines(err)[0], err


# --- the pieces on their own ----------------------------------------------------------------------------------

def test_output_names_follow_the_structure():
    t = torch.zeros(1)
    assert output_names_for(t) == ["output"]
    assert output_names_for((t, t, t)) == ["output_0", "output_1", "output_2"]
    assert output_names_for([t]) == ["output_0"]
    assert output_names_for({"class logits": t, "boxes/xywh": t, "3d": t, "": t}) == \
        ["class_logits", "boxes_xywh", "output_3d", "output"]
    assert output_names_for({"a b": t, "a_b": t, "input": t}, reserved=("input",)) == ["a_b", "a_b_2", "input_2"]
    assert output_names_for((t, {"boxes": t, "scores": [t, t]})) == \
        ["output_0", "output_1_boxes", "output_1_scores_0", "output_1_scores_1"]
    from edge_compress.export import ExportError
    for bad, why in ((None, "NoneType"), ((t, 3), "int at the output[1]"), ({}, "empty dict"), ((), "empty tuple")):
        with pytest.raises(ExportError, match=why.replace("[", r"\[").replace("]", r"\]")):
            output_names_for(bad)


def test_parity_is_per_output_on_each_outputs_scale(zoo, tmp_path):
    torch.manual_seed(0)
    model = zoo.TwoHead(width=8).eval()
    with torch.no_grad():
        model.box.weight.mul_(1000.0)    # boxes a thousand times the logits' scale
    x = torch.randn(4, 3, 32, 32)
    result = export_onnx(model, x[:1], tmp_path / "m.onnx", 13)
    assert result.output_names == ("output_0", "output_1") and result.output_shapes == ((1, 6), (1, 4))
    assert check_parity(result.path, model, x, 1e-4, 1e-4).passed
    with torch.no_grad():   # a change far under the boxes' scale but 1e-2 of the logits'
        model.cls.bias.add_(1e-2 * float(model(x)[0].abs().max()))
    parity = check_parity(result.path, model, x, 1e-4, 1e-4)
    by_name = {o.name: o for o in parity.outputs}
    assert not parity.passed and not by_name["output_0"].passed and by_name["output_1"].passed
    assert by_name["output_0"].max_rel > 1e-3 and parity.max_rel == by_name["output_0"].max_rel
    assert "output_0" in parity.to_dict()["outputs"][0]["name"]
    from edge_compress.export import ParityError
    with pytest.raises(ParityError, match=r"\(output output_0\)"):
        parity.raise_if_failed()


def test_single_tensor_export_is_unchanged(tmp_path):
    """One tensor out: the output is still `output`, and re-export gives the same bytes."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    x = torch.randn(1, 3, 8, 8)
    model(x)
    a = export_onnx(model.eval(), x, tmp_path / "a.onnx", 13)
    b = export_onnx(model, x, tmp_path / "b.onnx", 13)
    assert a.output_names == ("output",) and a.to_dict()["output_name"] == "output"
    assert a.path.read_bytes() == b.path.read_bytes()


def test_device_bench_reports_every_output(zoo, tmp_path):
    from edge_compress.deploy.runners import device_bench

    model = zoo.DictHead(width=8).eval()
    export_onnx(model, torch.randn(1, 3, 32, 32), tmp_path / "m.onnx", 13)
    result_path = tmp_path / "r.json"
    assert device_bench.main([str(tmp_path / "m.onnx"), "--warmup", "1", "--runs", "3", "--out", str(result_path)]) == 0
    result = json.loads(result_path.read_text())
    assert [o["name"] for o in result["outputs"]] == ["class_logits", "boxes"]
    assert result["outputs"][0]["sha256"] == result["output_sha256"] and result["outputs"][1]["shape"] == [1, 4]


def test_accuracy_metrics():
    from edge_compress.compress import accuracy as acc
    from edge_compress.compress.errors import InputError

    c = torch.tensor([[5, 1, 0], [0, 3, 1], [0, 0, 0]])   # rows: reference, columns: prediction
    # class 0: 5 / (6 + 5 - 5); class 1: 3 / (4 + 4 - 3); class 2: 0 / (0 + 1 - 0)
    assert acc.mean_iou(c) == pytest.approx((5 / 6 + 3 / 5 + 0) / 3)
    assert acc.mean_iou(torch.zeros(3, 3, dtype=torch.int64)) == 1.0
    logits, maps, boxes = torch.randn(4, 5), torch.randn(4, 3, 8, 8), torch.randn(4, 7, 4)
    assert acc.detect_task([("output", logits)], None).kind == acc.CLASSIFICATION
    assert acc.detect_task([("output", logits[:, :, None, None])], None).kind == acc.CLASSIFICATION
    assert acc.detect_task([("output", maps)], None).kind == acc.SEGMENTATION
    assert acc.detect_task([("output", maps)], torch.zeros(4, 8, 8)).kind == acc.SEGMENTATION
    # one label per image for a per-pixel output: not a segmentation task; the labels are left out, and said so
    task = acc.detect_task([("output", maps)], torch.zeros(4, dtype=torch.int64))
    assert task.kind == acc.OUTPUTS and "not used" in acc.check_labels(task, torch.zeros(4), "data")
    with pytest.raises(InputError, match="one class index per sample"):
        acc.check_labels(acc.detect_task([("output", logits)], None), torch.zeros(4, 8, 8), "data")
    assert acc.detect_task([("output", boxes)], None).kind == acc.OUTPUTS
    assert acc.detect_task([("output_0", logits), ("output_1", boxes)], None).kind == acc.OUTPUTS

    class Scaled(torch.nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):
            return x.flatten(1)[:, :4] * self.k, -x.flatten(1)[:, 4:8]

    x = torch.randn(10, 3, 2, 2)
    task = acc.detect_task(flatten_outputs(Scaled(1.0)(x)), None)
    same = acc.evaluate(Scaled(1.0), Scaled(1.0), x, None, task)
    assert all(o["rel_l2_error"] == 0 and o["cosine_similarity"] == pytest.approx(1) for o in same["outputs"])
    half = acc.evaluate(Scaled(1.0), Scaled(0.5), x, None, task)
    assert half["outputs"][0]["rel_l2_error"] == pytest.approx(0.5) and half["worst_output"] == "output_0"
    assert half["outputs"][0]["cosine_similarity"] == pytest.approx(1) and half["outputs"][1]["rel_l2_error"] == 0


# --- recovery for every task ------------------------------------------------------------------------------------

def _rel_error(student, teacher, x) -> float:
    with torch.no_grad():
        s, t = flatten_outputs(student.eval()(x)), flatten_outputs(teacher.eval()(x))
    return max(float((a - b).norm() / b.norm()) for (_, a), (_, b) in zip(s, t))


def test_recovery_distils_every_output_with_mse(zoo, inputs):
    from edge_compress.compress.calib import CalibData
    from edge_compress.compress.config import RecoveryOptions
    from edge_compress.compress.recovery import RecoveryError, recover

    x = torch.from_numpy(inputs)
    teacher = _with_statistics(zoo.DictHead(width=8), inputs)
    student = _with_statistics(zoo.DictHead(width=8), inputs)   # same architecture, other weights
    student.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.2 * p.abs().mean() * torch.randn_like(p))
    before = _rel_error(student, teacher, x)
    labels = CalibData(x, torch.arange(len(x)) % 6, "npz", "data")   # no use to a model with two outputs
    result = recover(student, teacher, labels, RecoveryOptions(epochs=3, batch_size=16, lr=0.01), progress=False)
    assert result.task == "outputs" and result.mode == "distill" and result.loss.startswith("MSE")
    assert _rel_error(student, teacher, x) < before
    with pytest.raises(RecoveryError, match="finetune needs labels that fit"):
        recover(student, teacher, labels, RecoveryOptions(mode="finetune", max_steps=1), progress=False)


def test_recovery_of_a_segmentation_model(zoo, inputs):
    from edge_compress.compress.calib import CalibData
    from edge_compress.compress.config import RecoveryOptions
    from edge_compress.compress.recovery import distillation_loss, recover

    x = torch.from_numpy(inputs)
    teacher = _with_statistics(zoo.TinyUNet(), inputs)
    y = torch.randint(0, 3, (len(x), 32, 32), generator=torch.Generator().manual_seed(0))
    tuned = recover(zoo.TinyUNet(), teacher, CalibData(x, y, "npz", "data"), RecoveryOptions(max_steps=2),
                    progress=False)
    assert (tuned.task, tuned.mode) == ("segmentation", "finetune")
    assert tuned.loss == "cross-entropy per pixel with the labels"
    distilled = recover(zoo.TinyUNet(), teacher, x, RecoveryOptions(max_steps=2), progress=False)
    assert distilled.mode == "distill" and "per pixel" in distilled.loss and np.isfinite(distilled.final_loss)
    # per pixel: the mean over pixels of each pixel's KL over the classes
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    flat = lambda v: v.permute(0, 2, 3, 1).reshape(-1, 3)  # noqa: E731
    assert float(distillation_loss(s, t, 2.0)) == pytest.approx(float(distillation_loss(flat(s), flat(t), 2.0)))


def test_pipeline_recovers_a_two_output_model(zoo, inputs, tmp_path, capsys):
    weights, calib = _files(zoo, inputs, tmp_path, "TwoHead")
    out = tmp_path / "out"
    code, _, err = run_cli(["--target", "jetson-nano", "--arch", "outputs_zoo:TwoHead", "--calib", calib,
                            "--train-data", calib, "--epochs", "1", "--macs", "50%", "--out", out, weights], capsys)
    assert code == 0, err
    recovery = json.loads((out / "report.json").read_text())["pruning"]["recovery"]
    assert recovery["task"] == "outputs" and recovery["mode"] == "distill" and recovery["loss"].startswith("MSE")
