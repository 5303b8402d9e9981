"""Every bad input of the issue: one line naming the problem and the fix, a non-zero exit code, no
traceback, and no output folder (nor a temporary one) left behind."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn

from edge_compress.compress.cli import main
from edge_compress.compress.errors import EXIT_BUDGET_MISSED, EXIT_INPUT_ERROR

TINY = ["--arch", "example-cnn", "--arch-kwargs", '{"width": 8}']


def _run(tmp_path, capsys, args):
    out = tmp_path / "out"
    code = main([*map(str, args), "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("[compress]")]
    assert not out.exists(), "an output folder was left behind"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "a temporary folder was left behind"
    assert "Traceback" not in stderr
    assert len(lines) == 1 and lines[0].startswith("compress: error: "), stderr
    return code, lines[0]


@pytest.fixture
def calib(calib_file):
    return calib_file


def test_missing_file(tmp_path, capsys, calib):
    code, msg = _run(tmp_path, capsys, ["--target", "host", *TINY, "--params", "50%", tmp_path / "nope.pt"])
    assert code == EXIT_INPUT_ERROR and "does not exist" in msg


def test_not_a_torch_file(tmp_path, capsys):
    f = tmp_path / "notes.pt"
    f.write_text("these are not weights\n" * 20)
    code, msg = _run(tmp_path, capsys, ["--target", "host", *TINY, "--params", "50%", f])
    assert code == EXIT_INPUT_ERROR and "not a PyTorch file" in msg and "torch.save" in msg


def test_truncated_file(tmp_path, capsys, tiny_model_file):
    data = tiny_model_file.read_bytes()
    f = tmp_path / "cut.pt"
    f.write_bytes(data[: len(data) // 2])
    code, msg = _run(tmp_path, capsys, ["--target", "host", *TINY, "--params", "50%", f])
    assert code == EXIT_INPUT_ERROR and ("truncated" in msg or "corrupt" in msg)


def test_state_dict_without_arch(tmp_path, capsys, tiny_model_file):
    code, msg = _run(tmp_path, capsys, ["--target", "host", "--params", "50%", tiny_model_file])
    assert code == EXIT_INPUT_ERROR and "--arch" in msg and "resnet56" in msg


def test_arch_that_does_not_import(tmp_path, capsys, tiny_model_file):
    code, msg = _run(tmp_path, capsys, ["--target", "host", "--arch", "no_such_pkg.models:build", "--params", "50%",
                                        tiny_model_file])
    assert code == EXIT_INPUT_ERROR and "cannot import module 'no_such_pkg.models'" in msg


def test_arch_whose_keys_do_not_match(tmp_path, capsys, tiny_model_file):
    code, msg = _run(tmp_path, capsys, ["--target", "host", "--arch", "resnet20", "--params", "50%", tiny_model_file])
    assert code == EXIT_INPUT_ERROR and "does not match --arch resnet20" in msg
    assert "missing" in msg and "e.g." in msg  # lists the first mismatches


def test_pickled_module_needs_trust(tmp_path, capsys):
    f = tmp_path / "full.pt"
    torch.save(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)), f)
    code, msg = _run(tmp_path, capsys, ["--target", "host", "--input-shape", "1x3x16x16", "--params", "50%", f])
    assert code == EXIT_INPUT_ERROR and "--trust-model" in msg and "arbitrary code" in msg


def test_pickled_module_with_trust_runs(tmp_path, capsys):
    f = tmp_path / "full.pt"
    torch.manual_seed(0)
    torch.save(nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(16, 4)), f)
    out = tmp_path / "trusted"
    code = main(["--target", "jetson-nano", "--trust-model", "--input-shape", "1x3x16x16", "--params", "60%",
                 "--out", str(out), str(f)])
    assert code == 0, capsys.readouterr().err
    assert (out / "model.pruned.pt").is_file() and (out / "model.onnx").is_file()


def test_unknown_target_lists_known(tmp_path, capsys, tiny_model_file):
    code, msg = _run(tmp_path, capsys, ["--target", "jetson-nan", *TINY, "--params", "50%", tiny_model_file])
    assert code == EXIT_INPUT_ERROR and "jetson-nano" in msg and "raspberry-pi-4" in msg


def test_malformed_profile_names_the_key(tmp_path, capsys, tiny_model_file):
    prof = tmp_path / "bad.yaml"
    prof.write_text("schema_version: 1\nextends: host\nname: bad\nruntime:\n  opsett: 13\n")
    code, msg = _run(tmp_path, capsys, ["--target", prof, *TINY, "--params", "50%", tiny_model_file])
    assert code == EXIT_INPUT_ERROR and "runtime.opsett" in msg and str(prof) in msg


def test_impossible_budget_states_best_reachable(tmp_path, capsys, tiny_model_file, calib):
    code, msg = _run(tmp_path, capsys, ["--target", "jetson-nano", *TINY, "--calib", calib, "--params", "10",
                                        tiny_model_file])
    assert code == EXIT_BUDGET_MISSED and "best reachable" in msg and "params" in msg


def test_calibration_missing(tmp_path, capsys, tiny_model_file):
    code, msg = _run(tmp_path, capsys, ["--target", "host", *TINY, "--calib", tmp_path / "none.npz", "--params", "50%",
                                        tiny_model_file])
    assert code == EXIT_INPUT_ERROR and "does not exist" in msg


def test_calibration_empty(tmp_path, capsys, tiny_model_file):
    f = tmp_path / "empty.npz"
    np.savez(f, x=np.zeros((0, 3, 32, 32), np.float32))
    code, msg = _run(tmp_path, capsys, ["--target", "host", *TINY, "--calib", f, "--params", "50%", tiny_model_file])
    assert code == EXIT_INPUT_ERROR and "empty" in msg


def test_calibration_wrong_shape(tmp_path, capsys, tiny_model_file):
    f = tmp_path / "shape.npz"
    np.savez(f, x=np.zeros((4, 3, 28, 28), np.float32))
    code, msg = _run(tmp_path, capsys, ["--target", "host", *TINY, "--calib", f, "--params", "50%", tiny_model_file])
    assert code == EXIT_INPUT_ERROR and "(4, 3, 28, 28)" in msg and "3, 32, 32" in msg


def test_calibration_with_nan(tmp_path, capsys, tiny_model_file):
    x = np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype(np.float32)
    x[2, 0, 0, 0] = np.nan
    f = tmp_path / "nan.npz"
    np.savez(f, x=x)
    code, msg = _run(tmp_path, capsys, ["--target", "host", *TINY, "--calib", f, "--params", "50%", tiny_model_file])
    assert code == EXIT_INPUT_ERROR and "NaN" in msg and "1 of 8" in msg


def test_no_budget_at_all(tmp_path, capsys, tiny_model_file):
    code, msg = _run(tmp_path, capsys, ["--target", "host", *TINY, tiny_model_file])
    assert code == EXIT_INPUT_ERROR and "--latency-ms" in msg


SVD_MODULE = """
import torch
import torch.nn as nn


class Spectrum(nn.Module):
    def forward(self, x):
        return torch.linalg.svd(x.flatten(2), full_matrices=False)[1]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.spec = Spectrum()

    def forward(self, x):
        return self.spec(self.conv(x)).flatten(1)
"""


def test_unsupported_op_names_op_and_module(tmp_path, capsys, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "svdnet.py").write_text(SVD_MODULE)
    monkeypatch.syspath_prepend(str(pkg))
    import svdnet

    f = tmp_path / "svd.pt"
    torch.save(svdnet.Net().state_dict(), f)
    code, msg = _run(tmp_path, capsys, ["--target", "host", "--arch", "svdnet:Net", "--input-shape", "1x3x8x8",
                                        "--latency-ms", "1000", f])
    assert code == EXIT_INPUT_ERROR and "linalg_svd" in msg and "spec" in msg


def test_torchscript_over_budget_cannot_be_pruned(tmp_path, capsys):
    f = tmp_path / "ts.pt"
    torch.jit.script(nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3))).save(str(f))
    code, msg = _run(tmp_path, capsys, ["--target", "jetson-nano", "--input-shape", "1x3x32x32", "--params", "10%", f])
    assert code == EXIT_INPUT_ERROR and "TorchScript" in msg and "--arch" in msg


TRACE_DEPENDENT = """
import torch
import torch.nn as nn


class Net(nn.Module):
    # Exports differently from how it runs: the ONNX graph doubles the output, eager PyTorch does not.
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x).mean((2, 3))
        return y * 2 if torch.jit.is_tracing() or torch.compiler.is_compiling() else y
"""


def test_failed_parity_fails_the_build_with_both_numbers(tmp_path, capsys, monkeypatch, calib):
    pkg = tmp_path / "userpkg2"
    pkg.mkdir()
    (pkg / "tracenet.py").write_text(TRACE_DEPENDENT)
    monkeypatch.syspath_prepend(str(pkg))
    import tracenet

    f = tmp_path / "trace.pt"
    torch.save(tracenet.Net().state_dict(), f)
    code, msg = _run(tmp_path, capsys, ["--target", "host", "--arch", "tracenet:Net", "--input-shape", "1x3x8x8",
                                        "--latency-ms", "1000", f])
    assert code == 3 and "ONNX output differs from PyTorch" in msg and "max_abs=" in msg and "max_rel=" in msg, msg
