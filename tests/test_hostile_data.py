"""Hostile and broken data, options and reports (issue 18, items 5-7): each is one line naming the problem
and the fix, exit 2, found before the expensive work, with nothing written and no user file changed.
The file and folder attacks (pruned models, --out, profiles, modes) are in test_hostile.py."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_hostile import FAST, TINY, leftovers, one_error_line, run, snapshot, work  # noqa: F401 - fixture

from edge_compress.compress.example import make_dataset


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _images(n=40, seed=3):
    return make_dataset(n, seed)


def _assert_clean(wd: Path, before: dict) -> None:
    assert snapshot(wd) == before
    assert not leftovers(wd)


CASES = {
    # name: (make the calib file in wd -> path, words the message must hold)
    "labels out of range": (lambda wd: _npz(wd / "c.npz", x=_images()[0], y=np.full(40, 99)), ["labels go up to 99", "8 outputs"]),
    "float labels": (lambda wd: _npz(wd / "c.npz", x=_images()[0], y=np.linspace(0, 7, 40)), ["whole numbers"]),
    "negative labels": (lambda wd: _npz(wd / "c.npz", x=_images()[0], y=-np.ones(40, np.int64)), ["negative"]),
    "values of 3e38": (lambda wd: _npz(wd / "c.npz", x=np.full((40, 3, 32, 32), 3e38, np.float32)), ["values reach 3e+38", "normalised"]),
    "object dtype": (lambda wd: _npz_object(wd / "c.npz"), ["do not load"]),
}


def _npz_object(path: Path) -> Path:
    np.savez(path, x=np.array([{"a": 1}] * 4, dtype=object))   # savez pickles object arrays
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_calibration_data_is_one_line_and_exit_2(work, capsys, case):
    make, words = CASES[case]
    calib = make(work)
    before = snapshot(work)
    code, err = run([*FAST, *TINY, "--calib", calib, "--criterion", "taylor", "--out", "out", "tiny.pt"], capsys)
    line = one_error_line(err)
    assert code == 2, err
    for w in words:
        assert w in line, line
    _assert_clean(work, before)


def test_decompression_bomb_image_is_refused_before_decoding(work, capsys, monkeypatch):
    import edge_compress.compress.calib as calib_module

    folder = work / "imgs" / "cls"
    folder.mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(folder / "big.png")
    monkeypatch.setattr(calib_module, "MAX_IMAGE_PIXELS", 1000)   # 64 x 64 claims more than this
    before = snapshot(work)
    code, err = run([*FAST, *TINY, "--calib", work / "imgs", "--out", "out", "tiny.pt"], capsys)
    assert code == 2 and "M-pixel limit" in one_error_line(err)
    _assert_clean(work, before)


def test_a_calib_callable_that_raises_is_an_input_error(work, capsys, monkeypatch):
    (work / "badcalib_mod.py").write_text("def batches():\n    raise RuntimeError('disk on fire')\n")
    monkeypatch.syspath_prepend(str(work))
    before = snapshot(work)
    code, err = run([*FAST, *TINY, "--calib", "badcalib_mod:batches", "--out", "out", "tiny.pt"], capsys)
    line = one_error_line(err)
    assert code == 2 and "disk on fire" in line and "RuntimeError" in line
    _assert_clean(work, before)


def test_mean_with_two_values_for_three_channels(work, capsys):
    images, labels = _images()
    calib = _npz(work / "c.npz", x=images, y=labels)
    before = snapshot(work)
    code, err = run([*FAST, *TINY, "--calib", calib, "--mean", "0.5,0.5", "--out", "out", "tiny.pt"], capsys)
    assert code == 2 and "--mean/--std give 2/3 values for 3-channel data" in one_error_line(err)
    _assert_clean(work, before)


@pytest.mark.parametrize("option, value, words", [
    ("--epochs", "-1", "epochs (--epochs) must be"), ("--lr", "nan", "lr (--lr) must be"),
    ("--train-batch-size", "0", "batch_size (--train-batch-size) must be"),
    ("--device", "bad@@host:x", "bad SSH target"),
])
def test_bad_options_are_refused_before_the_model_loads(work, capsys, monkeypatch, option, value, words):
    import edge_compress.compress.passes.load as pipeline

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(pipeline, "load_model", no_load)
    images, labels = _images()
    calib = _npz(work / "c.npz", x=images, y=labels)
    before = snapshot(work)
    code, err = run([*FAST, *TINY, "--calib", calib, "--train-data", calib, option, value, "--out", "out",
                     "tiny.pt"], capsys)
    assert code == 2 and words in one_error_line(err)
    _assert_clean(work, before)


def test_out_that_is_a_file_and_missing_train_data_are_found_before_the_model_loads(work, capsys, monkeypatch):
    import edge_compress.compress.passes.load as pipeline

    monkeypatch.setattr(pipeline, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    before = snapshot(work)
    code, err = run([*FAST, *TINY, "--out", "notes.txt", "tiny.pt"], capsys)
    assert code == 2 and "notes.txt" in one_error_line(err)
    code, err = run([*FAST, *TINY, "--train-data", "nosuch.npz", "--out", "out", "tiny.pt"], capsys)
    assert code == 2 and "nosuch.npz does not exist" in one_error_line(err)
    _assert_clean(work, before)


def test_unknown_target_is_answered_before_torch_loads(tmp_path):
    probe = ("import sys; from edge_compress.compress.cli import main; code = main(['--target', 'nosuch', '--macs', '50%', "
             "'m.pt']); print(code, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.stdout.split() == ["2", "False"], out.stderr
    assert "unknown target 'nosuch'" in out.stderr


def test_infinite_budget_in_a_profile_is_refused(work, capsys):
    (work / "inf.yaml").write_text("schema_version: 1\nextends: jetson-nano\nname: inf-nano\n"
                                   "budget: {latency_ms: .inf}\n")
    before = snapshot(work)
    code, err = run(["--target", "inf.yaml", *TINY, "--out", "out", "tiny.pt"], capsys)
    assert code == 2 and "budget.latency_ms" in one_error_line(err)
    _assert_clean(work, before)


@pytest.mark.parametrize("content, words", [
    ("null", "not a JSON object"), ('{"verdict": 5}', "does not match the report schema"),
    ("[" * 200000 + "]" * 200000, "cannot be read as a report"), ("{not json", "is not valid JSON"),
])
def test_compress_report_refuses_what_compress_did_not_write(tmp_path, capsys, content, words):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "report.json").write_text(content)
    (folder / "manifest.json").write_text(json.dumps({"files": {"report.json": "0" * 64}}))
    before = snapshot(tmp_path)
    code, err = run(["report", folder], capsys)
    assert code == 2 and words in one_error_line(err)
    assert snapshot(tmp_path) == before


def test_a_non_utf8_model_name_gives_a_valid_report(tmp_path, tiny_model_file, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = b"mod\xffel.pt"
    Path(name.decode("utf-8", "surrogateescape")).write_bytes(tiny_model_file.read_bytes())
    code, err = run([*FAST, *TINY, "--out", "out", name.decode("utf-8", "surrogateescape")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert "\ufffd" in report["inputs"]["model"]["path"]
    assert (tmp_path / "out" / "report.html").read_text(encoding="utf-8")


def test_list_criteria_into_head_is_not_an_internal_error():
    proc = subprocess.run(f"{sys.executable} -m compress --list-criteria | head -1", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_validate_refuses_unknown_ops_and_huge_inputs(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Foo", ["x"], ["y"], domain="com.evil")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.evil", 1)])
    onnx.save(model, tmp_path / "evil.onnx")
    code, err = run(["validate", tmp_path / "evil.onnx", "--target", "host", "--out", tmp_path / "v"], capsys)
    assert code == 2 and "ONNX Runtime cannot load" in one_error_line(err)
    big = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 100000, 100000])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 100000, 100000])])
    onnx.save(helper.make_model(big, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "big.onnx")
    started = time.perf_counter()
    code, err = run(["validate", tmp_path / "big.onnx", "--target", "host", "--out", tmp_path / "v"], capsys)
    assert code == 2 and "GiB" in one_error_line(err)
    assert not (tmp_path / "v").exists()
