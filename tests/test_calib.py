"""Calibration data from .npz/.npy files, image folders and module:callable, with its error messages."""
from __future__ import annotations

import textwrap
import uuid

import numpy as np
import pytest
import torch

from edge_compress.compress.calib import CalibData, load_calibration, synthetic_calibration
from edge_compress.compress.errors import CalibrationError, InputError
from helpers_units import forget_module, one_line

SHAPE = (3, 8, 8)
MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.1)


def _calib_error(spec, shape=SHAPE, **kw) -> str:
    with pytest.raises(CalibrationError) as exc:
        load_calibration(str(spec), shape, **kw)
    assert isinstance(exc.value, InputError)
    return one_line(str(exc.value))


def _normalise(u8_nchw: np.ndarray) -> np.ndarray:
    mean = np.asarray(MEAN, np.float32)[:, None, None]
    std = np.asarray(STD, np.float32)[:, None, None]
    return (u8_nchw.astype(np.float32) / 255.0 - mean) / std


# ---- numpy files ---------------------------------------------------------------------------------

def test_npz_nchw_float_is_taken_as_normalised(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, *SHAPE)).astype(np.float32)
    y = rng.integers(0, 5, 10)
    path = tmp_path / "calib.npz"
    np.savez(path, x=x, y=y)
    data = load_calibration(str(path), SHAPE, samples=100, mean=MEAN, std=STD)
    assert isinstance(data, CalibData) and len(data) == 10
    assert data.x.dtype == torch.float32 and data.x.shape == (10, *SHAPE)
    assert np.array_equal(data.x.numpy(), x)  # float data is not normalised again
    assert data.y.dtype == torch.int64 and np.array_equal(data.y.numpy(), y)
    assert data.labels_from == "data" and not data.synthetic and str(path) in data.source


def test_npz_nhwc_uint8_is_transposed_and_normalised(tmp_path):
    rng = np.random.default_rng(1)
    x_nhwc = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "calib.npz"
    np.savez(path, x=x_nhwc, y=np.arange(6))
    data = load_calibration(str(path), SHAPE, mean=MEAN, std=STD)
    expected = _normalise(x_nhwc.transpose(0, 3, 1, 2))
    assert data.x.shape == (6, *SHAPE)
    np.testing.assert_allclose(data.x.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert data.y.tolist() == list(range(6))
    # without mean/std: only scaled to [0, 1]
    plain = load_calibration(str(path), SHAPE)
    np.testing.assert_allclose(plain.x.numpy(), x_nhwc.transpose(0, 3, 1, 2) / 255.0, rtol=1e-6)


def test_npz_alternative_key_names(tmp_path):
    path = tmp_path / "calib.npz"
    np.savez(path, images=np.zeros((3, *SHAPE), np.float32), labels=np.array([2, 1, 0]))
    data = load_calibration(str(path), SHAPE)
    assert data.y.tolist() == [2, 1, 0]


def test_npy_without_labels(tmp_path):
    x = np.random.default_rng(2).standard_normal((4, *SHAPE)).astype(np.float32)
    path = tmp_path / "calib.npy"
    np.save(path, x)
    data = load_calibration(str(path), SHAPE)
    assert data.y is None and data.labels_from == "none"
    assert np.array_equal(data.x.numpy(), x)
    assert "npy" in data.source


# ---- image folders -------------------------------------------------------------------------------

def _write_png(path, rgb, size=(8, 8)):
    from PIL import Image

    Image.new("RGB", size, tuple(rgb)).save(path)


def test_image_folder_with_class_subfolders(tmp_path):
    colours = {"cat": [(255, 0, 0), (200, 100, 50)], "dog": [(0, 255, 0)], "emu": [(10, 20, 30), (0, 0, 255)]}
    root = tmp_path / "images"
    for cls, cols in colours.items():
        (root / cls).mkdir(parents=True)
        for i, c in enumerate(cols):
            # one larger image: the loader resizes to the input shape
            _write_png(root / cls / f"{i}.png", c, size=(16, 16) if i else (8, 8))
    (root / "dog" / "notes.txt").write_text("not an image")
    data = load_calibration(str(root), SHAPE, mean=MEAN, std=STD)
    assert data.y.tolist() == [0, 0, 1, 2, 2]  # sorted class folders, sorted files
    assert data.x.shape == (5, *SHAPE)
    flat = [c for cols in colours.values() for c in cols]
    for i, c in enumerate(flat):
        u8 = np.broadcast_to(np.asarray(c, np.uint8)[:, None, None], SHAPE)[None]
        np.testing.assert_allclose(data.x[i].numpy(), _normalise(u8)[0], rtol=1e-5, atol=1e-5)
    assert "image folder" in data.source


def test_image_folder_without_classes_and_grayscale(tmp_path):
    for i in range(3):
        _write_png(tmp_path / f"{i}.png", (30 * i, 30 * i, 30 * i))
    data = load_calibration(str(tmp_path), (1, 8, 8))
    assert data.y is None and data.x.shape == (3, 1, 8, 8)
    np.testing.assert_allclose(data.x[:, 0, 0, 0].numpy(), [0.0, 30 / 255, 60 / 255], rtol=1e-6)


def test_image_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    msg = _calib_error(empty)
    assert str(empty) in msg and "no images" in msg and "sub-folder per class" in msg

    broken = tmp_path / "broken" / "cls"
    broken.mkdir(parents=True)
    (broken / "bad.png").write_bytes(b"not a png at all")
    msg = _calib_error(tmp_path / "broken")
    assert "bad.png" in msg and "does not decode" in msg and "remove or replace" in msg

    good = tmp_path / "good"
    good.mkdir()
    _write_png(good / "a.png", (1, 2, 3))
    msg = _calib_error(good, shape=(4, 8, 8))
    assert "1 or 3 channels" in msg and ".npz" in msg


# ---- module:callable -----------------------------------------------------------------------------

def test_callable_yielding_batches(tmp_path, monkeypatch):
    name = f"calibsrc_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        import torch

        def batches():
            g = torch.Generator().manual_seed(0)
            for i in range(3):
                yield torch.randn(4, 3, 8, 8, generator=g), torch.full((4,), i)

        def single_samples():
            return [torch.zeros(3, 8, 8), torch.ones(3, 8, 8)]

        def not_iterable():
            return 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        data = load_calibration(f"{name}:batches", SHAPE, mean=MEAN, std=STD)
        g = torch.Generator().manual_seed(0)
        expected = torch.cat([torch.randn(4, 3, 8, 8, generator=g) for _ in range(3)])
        assert torch.equal(data.x, expected)  # taken as already normalised
        assert data.y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
        assert data.source == f"callable {name}:batches"

        single = load_calibration(f"{name}:single_samples", SHAPE)
        assert single.x.shape == (2, *SHAPE) and single.y is None

        msg = _calib_error(f"{name}:not_iterable")
        assert "int" in msg and "not an iterable" in msg
        msg = _calib_error(f"{name}:missing")
        assert f"{name}:missing" in msg and "cannot import" in msg
    finally:
        forget_module(name)


# ---- subsampling ---------------------------------------------------------------------------------

def test_subsampling_is_deterministic_for_a_seed(tmp_path):
    n = 50
    x = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, *SHAPE)).copy()
    path = tmp_path / "calib.npz"
    np.savez(path, x=x, y=np.arange(n))
    a = load_calibration(str(path), SHAPE, samples=10, seed=3)
    b = load_calibration(str(path), SHAPE, samples=10, seed=3)
    c = load_calibration(str(path), SHAPE, samples=10, seed=4)
    assert len(a) == 10
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    ids = a.x[:, 0, 0, 0].long()
    assert torch.equal(ids, a.y)  # inputs and labels stay paired
    assert ids.unique().numel() == 10 and torch.equal(ids, ids.sort().values)  # distinct, file order
    assert not torch.equal(a.y, c.y)  # another seed, another subset
    full = load_calibration(str(path), SHAPE, samples=n)
    assert full.y.tolist() == list(range(n))


# ---- errors --------------------------------------------------------------------------------------

def test_missing_path(tmp_path):
    path = tmp_path / "nope.npz"
    msg = _calib_error(path)
    assert str(path) in msg and "does not exist" in msg and "image folder" in msg


def test_empty_array(tmp_path):
    path = tmp_path / "empty.npy"
    np.save(path, np.zeros((0, *SHAPE), np.float32))
    msg = _calib_error(path)
    assert str(path) in msg and "empty" in msg and "3x8x8" in msg


def test_wrong_shape_names_expected_shape(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((4, 3, 8, 9), np.float32))
    msg = _calib_error(path)
    assert str(path) in msg and "(4, 3, 8, 9)" in msg and "(N, 3, 8, 8)" in msg and "(N, 8, 8, 3)" in msg


def test_nan_counts_samples(tmp_path):
    x = np.zeros((7, *SHAPE), np.float32)
    x[1, 0, 0, 0] = np.nan
    x[4, 2, 3, 3] = np.inf
    x[4, 1, 1, 1] = np.nan
    path = tmp_path / "nan.npy"
    np.save(path, x)
    msg = _calib_error(path)
    assert str(path) in msg and "2 of 7 samples" in msg and "NaN" in msg


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "calib.csv"
    path.write_text("1,2,3\n")
    msg = _calib_error(path)
    assert str(path) in msg and "'.csv'" in msg and ".npz" in msg


def test_npz_without_x(tmp_path):
    path = tmp_path / "calib.npz"
    np.savez(path, foo=np.zeros((2, *SHAPE)), bar=np.zeros(2))
    msg = _calib_error(path)
    assert str(path) in msg and "'foo'" in msg and "'x'" in msg


def test_label_count_mismatch_and_bad_samples(tmp_path):
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.zeros((5, *SHAPE), np.float32), y=np.arange(4))
    msg = _calib_error(path)
    assert "5 inputs but 4 labels" in msg
    msg = _calib_error(path, samples=0)
    assert "--calib-samples" in msg


def test_corrupt_npz(tmp_path):
    path = tmp_path / "calib.npz"
    path.write_bytes(b"PK\x03\x04 definitely not a complete archive")
    msg = _calib_error(path)
    assert str(path) in msg and "does not load" in msg


def test_synthetic_calibration_is_labelled_and_seeded():
    a = synthetic_calibration(SHAPE, 4, seed=1)
    b = synthetic_calibration(SHAPE, 4, seed=1)
    assert a.synthetic and a.y is None and a.x.shape == (4, *SHAPE)
    assert torch.equal(a.x, b.x)
    assert not torch.equal(a.x, synthetic_calibration(SHAPE, 4, seed=2).x)
