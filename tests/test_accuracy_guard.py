"""The accuracy limit (--max-accuracy-drop, --min-agreement): met, binding (exit 1 with the best model within it
written), without labels (agreement with the original), and bad values refused before the model loads.

Runs on the predicted raspberry-pi-4 target with a MACs budget, so no latency noise decides anything."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge_compress.compress.cli.main import main

TINY = ["--target", "raspberry-pi-4", "--arch", "example-cnn", "--arch-kwargs", '{"width": 8}']


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def unlabelled_calib(tmp_path_factory):
    from edge_compress.compress.example import make_dataset

    x, _ = make_dataset(96, seed=7)
    path = tmp_path_factory.mktemp("calib") / "nolabels.npz"
    np.savez(path, x=x)
    return path


def _report(out_dir) -> dict:
    return json.loads((out_dir / "report.json").read_text())


def test_a_limit_that_is_met(tiny_model_file, calib_file, tmp_path, capsys):
    out = tmp_path / "met"
    code, stdout, err = run_cli([*TINY, "--calib", calib_file, "--macs", "80%", "--max-accuracy-drop", "100",
                                 "--out", out, tiny_model_file], capsys)
    assert code == 0, err
    r = _report(out)
    a, guard = r["accuracy"], r["accuracy"]["guard"]
    assert r["verdict"] == "met" and guard["met"] and not guard["binding"]
    assert guard["flag"] == "--max-accuracy-drop" and guard["limit"] == 100 and guard["unit"] == "points"
    # 96 samples: every 4th held out; the accuracy section is measured on those, against the labels
    assert guard["samples"] == a["samples"] == 24 and a["against"] == "labels"
    assert guard["value"] == pytest.approx(100 * (a["top1_original"] - a["top1_final"]), abs=1e-6)
    assert r["inputs"]["budget_requested"]["max_accuracy_drop"] == 100
    assert "accuracy limit met (--max-accuracy-drop)" in stdout and "points" in stdout
    assert all("accuracy_guard" in rd for rd in r["pruning"]["rounds"])


def test_a_limit_that_cannot_be_met_exits_1_with_the_best_model_within_it(tiny_model_file, calib_file, tmp_path,
                                                                            capsys):
    out = tmp_path / "binding"
    code, stdout, err = run_cli([*TINY, "--calib", calib_file, "--macs", "30%", "--max-accuracy-drop", "0",
                                 "--out", out, tiny_model_file], capsys)
    assert code == 1, err
    assert (out / "model.onnx").is_file() and (out / "model.pruned.pt").is_file()
    r = _report(out)
    guard = r["accuracy"]["guard"]
    assert r["verdict"] == "missed"
    assert guard["binding"] and guard["met"] and guard["value"] <= 1e-9   # the model written is within the limit
    assert r["final"]["macs"] > r["budget"]["macs"]                       # and so misses the MACs budget
    assert any(n.startswith("accuracy limit binding") for n in r["notes"])
    undone = [rd for rd in r["pruning"]["rounds"] if rd.get("undone")]
    assert undone and all(not rd["accuracy_guard"]["within_limit"] for rd in undone)
    assert "MISSED" in stdout and "accuracy limit binding" in stdout


def test_without_labels_the_limit_is_agreement_with_the_original(tiny_model_file, unlabelled_calib, tmp_path,
                                                                  capsys):
    out = tmp_path / "agree"
    code, stdout, err = run_cli([*TINY, "--calib", unlabelled_calib, "--macs", "80%", "--min-agreement", "50%",
                                 "--out", out, tiny_model_file], capsys)
    r = _report(out)
    a, guard = r["accuracy"], r["accuracy"]["guard"]
    assert a["labels_from"] == "model predictions" and a["against"] == "original"
    assert guard["unit"] == "percent" and guard["limit"] == 50
    assert guard["value"] == pytest.approx(100 * a["agreement_with_original"], abs=1e-6)
    assert code == (0 if guard["met"] and r["final"]["macs"] <= r["budget"]["macs"] else 1), err


@pytest.mark.parametrize("flags, words", [
    (["--max-accuracy-drop", "nan"], "--max-accuracy-drop must be a number of percentage points"),
    (["--max-accuracy-drop", "-1"], "--max-accuracy-drop must be"),
    (["--max-accuracy-drop", "101"], "from 0 to 100"),
    (["--min-agreement", "0.95"], "looks like a fraction; write 95"),
    (["--min-agreement", "101%"], "--min-agreement must be a percent from 0 to 100"),
    (["--min-agreement", "most"], "--min-agreement must be a percent"),
    (["--max-accuracy-drop", "2", "--min-agreement", "95"], "not both"),
])
def test_bad_values_exit_2_before_the_model_loads(flags, words, calib_file, tmp_path, capsys):
    code, _, err = run_cli([*TINY, "--calib", calib_file, "--macs", "50%", *flags, tmp_path / "absent.pt"], capsys)
    assert code == 2 and words in err and "absent.pt" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_limit_needs_calibration_data(tmp_path, capsys):
    code, _, err = run_cli([*TINY, "--macs", "50%", "--max-accuracy-drop", "2", tmp_path / "absent.pt"], capsys)
    assert code == 2 and "pass --calib" in err


def test_too_few_held_out_samples(tiny_model_file, calib_file, tmp_path, capsys):
    code, _, err = run_cli([*TINY, "--calib", calib_file, "--calib-samples", "16", "--macs", "50%",
                            "--max-accuracy-drop", "2", "--out", tmp_path / "o", tiny_model_file], capsys)
    assert code == 2 and "pass at least 32 samples" in err
