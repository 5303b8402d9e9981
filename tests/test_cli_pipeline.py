"""End to end through the command line: every stage runs for real (Torch-Pruning, the ONNX exporter,
onnx-simplifier, ONNX Runtime), and every artifact is checked from the files it wrote."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edge_compress.compress.cli import main
from edge_compress.compress.model_io import load_pruned

TINY_ARGS = ["--arch", "example-cnn", "--arch-kwargs", '{"width": 8}']


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_host_run_writes_every_artifact(tiny_model_file, calib_file, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(["--target", "host", *TINY_ARGS, "--calib", calib_file, "--macs", "50%",
                                 "--out", out, "--json", tiny_model_file], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["verdict"] == "met"
    for name in ("model.pruned.pt", "model.onnx", "model.ort.onnx", "report.json", "manifest.json", "logs/compress.log"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())["files"]
    assert set(manifest) >= {"model.pruned.pt", "model.onnx", "model.ort.onnx", "report.json"}
    for rel, digest in manifest.items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest, rel
    report = json.loads((out / "report.json").read_text())
    assert report["final"]["macs"] <= report["budget"]["macs"] <= 0.5 * report["original"]["macs"] + 1
    assert report["final"]["latency_kind"].startswith("measured")
    assert report["final"]["latency_stats"]["provider"] == "CPUExecutionProvider"
    stats = report["final"]["latency_stats"]
    # Adaptive timing (host profile): at least min_runs, at most max_runs, and the stop reason recorded.
    from edge_compress.device_profiles import load_profile

    m = load_profile("host").measurement
    precision = stats["precision"]
    assert m.min_runs <= stats["runs"] <= m.max_runs and stats["warmup_runs"] == m.warmup_runs
    assert precision["runs"] == stats["runs"] and precision["stopped_on"] in ("precision", "max_runs", "time_cap") and precision["adaptive"]
    assert stats["median_ms"] <= stats["p90_ms"] <= stats["p95_ms"] <= stats["p99_ms"]
    assert report["export"]["parity"]["passed"] and report["export"]["parity"]["max_rel"] < 1e-4
    assert report["export"]["onnx"]["opset"] == 17
    assert not any("tmp-" in str(v) for v in report["export"]["simplify"].values())
    assert report["accuracy"]["evaluated"] and report["accuracy"]["labels_from"] == "data"
    changed = [r for r in report["layers"] if r["out_channels_after"] != r["out_channels_before"]]
    assert changed and all(r["out_channels_after"] % 4 == 0 and r["out_channels_after"] >= 4 for r in changed)
    # The pruned model reloads alone and agrees with the ONNX model.
    model = load_pruned(out / "model.pruned.pt")
    x = np.load(calib_file)["x"][:1].astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    x = (x - 0.5) / 0.25
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert sum(p.numel() for p in model.parameters()) == report["final"]["params"]


def test_jetson_nano_bundle(tiny_model_file, calib_file, tmp_path, capsys):
    out = tmp_path / "nano"
    code, _, err = run_cli(["--target", "jetson-nano", *TINY_ARGS, "--calib", calib_file, "--macs", "70%",
                            "--out", out, tiny_model_file], capsys)
    assert code == 0, err
    model = onnx.load(out / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain: o.version for o in model.opset_import}[""] == 13
    script = out / "build_engine.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    text = script.read_text()
    assert "/usr/src/tensorrt/bin/trtexec" in text and "--onnx=model.onnx" in text and "--fp16" in text
    assert "--workspace=1024" in text  # TensorRT 8.2 has no --memPoolSize
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    report = json.loads((out / "report.json").read_text())
    assert report["final"]["latency_kind"].startswith("predicted")
    assert report["final"]["macs"] <= report["budget"]["macs"]
    # The Nano's fitted per-call overhead (about 2.6 ms) dominates a model this small
    assert report["final"]["latency_ms"] > 2.5
    assert report["export"]["parity"]["max_abs"] is not None
    assert report["engine"]["built"] is False and "device" in report["engine"]["why_not_built"]
    assert not (out / "model.ort.onnx").exists()


def test_rerun_gives_same_architecture_and_onnx_bytes(tiny_model_file, calib_file, tmp_path, capsys):
    outs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        code, _, err = run_cli(["--target", "jetson-nano", *TINY_ARGS, "--calib", calib_file, "--params", "40%",
                                "--seed", "3", "--out", out, tiny_model_file], capsys)
        assert code == 0, err
        outs.append(out)
    assert (outs[0] / "model.onnx").read_bytes() == (outs[1] / "model.onnx").read_bytes()
    layers = [json.loads((o / "report.json").read_text())["layers"] for o in outs]
    assert layers[0] == layers[1]


def test_rerun_replaces_previous_output(tiny_model_file, calib_file, tmp_path, capsys):
    out = tmp_path / "same"
    for budget in ("70%", "40%"):
        code, _, err = run_cli(["--target", "jetson-nano", *TINY_ARGS, "--calib", calib_file, "--params", budget,
                                "--out", out, tiny_model_file], capsys)
        assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"]["budget_requested"] == {"params": "40%"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same"]  # no temp or backup folders left


def test_original_already_within_budget_is_said(tiny_model_file, calib_file, tmp_path, capsys):
    out = tmp_path / "noop"
    code, _, err = run_cli(["--target", "jetson-nano", *TINY_ARGS, "--calib", calib_file, "--latency-ms", "1000",
                            "--out", out, tiny_model_file], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert any("nothing was pruned" in n for n in report["notes"])
    assert report["final"]["params"] == report["original"]["params"]


def test_list_and_show_targets(capsys):
    code, out, _ = run_cli(["--list-targets", "--json"], capsys)
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert sorted(rows) == sorted(["host", "jetson-nano", "jetson-orin-nano", "jetson-xavier-nx", "jetson-agx-orin",
                                   "raspberry-pi-4", "raspberry-pi-5"])
    assert rows["host"]["latency"] == "measured" and rows["jetson-nano"]["latency"] == "predicted"
    assert rows["jetson-nano"]["cost_model"] == "fitted" and rows["raspberry-pi-4"]["cost_model"] == "fitted"
    assert rows["host"]["cost_model"] in ("fitted", "fitted elsewhere")   # depends on this machine's CPU
    code, out, _ = run_cli(["--list-targets"], capsys)
    assert code == 0 and "predicted" in out and "measured" in out
    code, out, _ = run_cli(["--show-target", "jetson-nano"], capsys)
    assert code == 0 and json.loads(out)["runtime"]["opset"] == 13


def test_user_profile_extends_builtin(tiny_model_file, calib_file, tmp_path, capsys):
    profile = tmp_path / "my-nano.yaml"
    profile.write_text("schema_version: 1\nextends: jetson-nano\nname: my-nano\npruning:\n  channel_multiple: 4\n")
    out = tmp_path / "mine"
    code, _, err = run_cli(["--target", profile, *TINY_ARGS, "--calib", calib_file, "--params", "50%",
                            "--out", out, tiny_model_file], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"]["target"]["name"] == "my-nano"
    assert report["inputs"]["target"]["pruning"]["channel_multiple"] == 4


def test_console_script_help_and_version():
    exe = Path(sys.executable).with_name("compress")
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--latency-ms" in res.stdout and "exit codes" in res.stdout
    res = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("compress ")


@pytest.mark.slow
def test_resnet56_host_speedup_1_5(shared_dir, tmp_path, capsys):
    """The issue's acceptance run: the option-A ResNet-56 must come out valid and within a measured budget."""
    out = tmp_path / "r56"
    weights = shared_dir / "models" / "resnet56-4bfd9763.th"
    code, _, err = run_cli(["--target", "host", "--arch", "resnet56", "--speedup", "1.5", "--out", out, weights], capsys)
    assert code in (0, 1), err
    report = json.loads((out / "report.json").read_text())
    assert report["final"]["latency_kind"].startswith("measured")
    # The final measurement is new: on a loaded machine it can land over the budget; the verdict and the exit
    # code must then say so (asserting it met would test the machine's load, not the code).
    met = report["final"]["latency_ms"] <= report["budget"]["latency_ms"]
    assert report["verdict"] == ("met" if met else "missed") and code == (0 if met else 1)
    assert report["budget"]["latency_ms"] == pytest.approx(report["original"]["latency_ms"] / 1.5)
    # a speedup is a ratio: judged on the original and the final timed interleaved in one run, so that the
    # machine's drift between two separate measurements cannot pass or fail it
    assert "interleaved" in report["original"]["latency_kind"] and "interleaved" in report["final"]["latency_kind"]
    accepted = report["pruning"]["rounds"][-1]
    assert accepted["meets_budget"] and accepted["speedup_measured"] >= 1.5
    assert any("--speedup 1.5 was judged" in n for n in report["notes"])
    unprunable = {g["root"]: g["reason"] for g in report["pruning"]["groups"] if not g["prunable"]}
    # the zero-padding shortcuts are layers with a channel map: each stage's residual stream is a prunable group,
    # and only the classifier's outputs stay
    assert set(unprunable) == {"linear"}
    code = (f"from edge_compress.compress import load_pruned; import torch; m = load_pruned({str(out / 'model.pruned.pt')!r}); "
            "print(tuple(m(torch.randn(2, 3, 32, 32)).shape))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "(2, 10)"


def test_python_api_matches_cli(tiny_model_file, calib_file, tmp_path, capsys):
    from edge_compress.compress import CompressConfig, compress

    result = compress(tiny_model_file, target="jetson-nano", arch="example-cnn", arch_kwargs={"width": 8},
                      calib=str(calib_file), params="50%", out=tmp_path / "api", seed=1)
    code, stdout, _ = run_cli(["--target", "jetson-nano", *TINY_ARGS, "--calib", calib_file, "--params", "50%",
                               "--seed", "1", "--out", tmp_path / "cli", "--json", tiny_model_file], capsys)
    assert code == result.exit_code == 0
    assert json.loads(stdout)["final"] == result.final.to_dict()
    assert (tmp_path / "api" / "model.onnx").read_bytes() == (tmp_path / "cli" / "model.onnx").read_bytes()
    with pytest.raises(TypeError):
        compress(CompressConfig.from_keywords(model=tiny_model_file), target="host")


@pytest.mark.slow
def test_builtin_example_command(tmp_path):
    """The README's first command runs `compress example`: train, then compress to 1.5x the speed for host
    (measured) and raspberry-pi-4 (predicted), with accuracy on held-out images."""
    exe = Path(sys.executable).with_name("compress")
    res = subprocess.run([str(exe), "example", "--out", str(tmp_path), "--json"], capture_output=True, text=True,
                         timeout=900)
    summary = json.loads(res.stdout)
    runs = summary["runs"]
    assert summary["trained_accuracy_held_out"] > 0.9  # a trained model, so that the metrics mean something
    assert set(runs) == {"host", "raspberry-pi-4"}
    # The predicted run's verdict is deterministic; the measured one depends on this machine's timing, so
    # the exit code must follow it rather than be asserted.
    assert runs["raspberry-pi-4"]["verdict"] == "met"
    assert runs["raspberry-pi-4"]["final"]["latency_kind"].startswith("predicted")
    assert runs["host"]["final"]["latency_kind"].startswith("measured")
    assert res.returncode == (0 if runs["host"]["verdict"] == "met" else 1), res.stderr[-2000:]
    for run in runs.values():
        acc = run["held_out_accuracy"]
        assert acc["images"] == 1000 and 0 <= acc["pruned"] <= 1
        assert run["final"]["macs"] < run["original"]["macs"]
    assert (tmp_path / "compressed-host" / "model.ort.onnx").is_file()
    assert (tmp_path / "compressed-raspberry-pi-4" / "report.html").is_file()


def test_dynamic_batch_export(tiny_model_file, calib_file, tmp_path, capsys):
    out = tmp_path / "dyn"
    code, _, err = run_cli(["--target", "jetson-nano", *TINY_ARGS, "--calib", calib_file, "--macs", "70%",
                            "--dynamic-batch", "--out", out, tiny_model_file], capsys)
    assert code == 0, err
    model = onnx.load(out / "model.onnx")
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value          # symbolic batch
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    assert sess.run(None, {sess.get_inputs()[0].name: x})[0].shape[0] == 3
    assert "--shapes=input:1x3x32x32" in (out / "build_engine.sh").read_text()


def test_host_int8_records_latency_and_accuracy_change(tiny_model_file, calib_file, tmp_path, capsys):
    profile = tmp_path / "host-int8.yaml"
    profile.write_text("extends: host\nname: host-int8\nruntime:\n  precision: int8\n")
    out = tmp_path / "int8"
    code, _, err = run_cli(["--target", profile, *TINY_ARGS, "--calib", calib_file, "--macs", "70%",
                            "--out", out, tiny_model_file], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    q = report["export"]["quantization"]
    assert q["format"] == "QDQ" and q["max_abs_error"] > 0 and 0 <= q["top1_agreement"] <= 1
    assert report["engine"]["precision"] == "int8"
    ops = {n.op_type for n in onnx.load(out / "model.int8.onnx").graph.node}
    assert "QuantizeLinear" in ops
    assert report["final"]["latency_kind"].startswith("measured")
    assert any("INT8 (QDQ) model" in n for n in report["notes"])
