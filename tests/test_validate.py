"""`compress validate`: any ONNX model measured on a target, the same verdict and exit codes as the pipeline."""
from __future__ import annotations

import json

import pytest

from edge_compress.compress.cli import main

TINY = ["--arch", "example-cnn", "--arch-kwargs", '{"width": 8}']


def _cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def exported(tiny_model_file, calib_file, tmp_path_factory):
    """The tiny model through the pipeline with a budget it already meets: its model.onnx is the original."""
    out = tmp_path_factory.mktemp("p") / "run"
    code = main(["--target", "host", *TINY, "--calib", str(calib_file), "--latency-ms", "1000", "--out", str(out),
                 "-q", str(tiny_model_file)])
    assert code == 0
    return out


def test_validate_gives_the_pipelines_verdict_when_met(exported, tmp_path, capsys):
    code, out, err = _cli(["validate", exported / "model.onnx", "--target", "host", "--latency-ms", "1000",
                           "--out", tmp_path / "v", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["verdict"] == "met"
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    pipeline = json.loads((exported / "report.json").read_text())
    assert report["verdict"] == pipeline["verdict"] == "met"
    from edge_compress.device_profiles import load_profile

    m = load_profile("host").measurement
    stats = report["final"]["latency_stats"]   # adaptive timing: between the host profile's min and max runs
    assert report["final"]["latency_kind"].startswith("measured") and m.min_runs <= stats["runs"] <= m.max_runs
    assert stats["precision"]["runs"] == stats["runs"] and stats["precision"]["adaptive"]
    assert report["inputs"]["model"]["sha256"] == pipeline["artifacts"]["model.onnx"]


def test_validate_gives_the_pipelines_verdict_when_missed(tiny_model_file, exported, tmp_path, capsys):
    budget = "0.001"   # 1 microsecond: no model and no pruning meets it
    code_p, _, _ = _cli(["--target", "host", *TINY, "--latency-ms", budget, "--out", tmp_path / "p", tiny_model_file],
                        capsys)
    code_v, _, err = _cli(["validate", exported / "model.onnx", "--target", "host", "--latency-ms", budget,
                           "--out", tmp_path / "v"], capsys)
    assert code_p == code_v == 1, err
    assert json.loads((tmp_path / "v" / "report.json").read_text())["verdict"] == "missed"


@pytest.mark.parametrize("args,needle", [
    (["--latency-ms", "50%"], "absolute budgets"),
    (["--latency-ms", "5", "--target", "jetson-nano"], "cannot be measured from here"),
])
def test_validate_input_errors(exported, tmp_path, capsys, args, needle):
    target = [] if "--target" in args else ["--target", "host"]
    code, _, err = _cli(["validate", exported / "model.onnx", *target, *args, "--out", tmp_path / "v"], capsys)
    assert code == 2 and needle in err, err
    assert not (tmp_path / "v").exists()


def test_validate_refuses_a_file_that_is_not_onnx(tmp_path, capsys):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")
    code, _, err = _cli(["validate", bad, "--target", "host", "--latency-ms", "5", "--out", tmp_path / "v"], capsys)
    assert code == 2 and "not a valid ONNX model" in err


def test_report_command_rerenders_html(exported, tmp_path, capsys):
    code, out, err = _cli(["report", exported], capsys)
    assert code == 0, err
    html = (exported / "report.html").read_text()
    assert "<html" in html.lower() and "http://" not in html and "https://" not in html


def test_report_command_on_a_folder_without_report(tmp_path, capsys):
    code, _, err = _cli(["report", tmp_path], capsys)
    assert code == 2 and "does not exist" in err
