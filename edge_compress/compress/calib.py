"""Calibration data: an image folder, an .npz/.npy of arrays, or a `module:callable`.

Returns one float32 tensor (N, C, H, W) and optional integer labels. Bad data is refused with one line
naming the problem: missing, empty, wrong shape, non-finite values. Without labels, the original
model's predictions stand in (done by the caller, which has the model).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from .errors import CalibrationError

# Far beyond any normalised input, and below where float32 arithmetic in a conv overflows to inf.
MAX_ABS_INPUT = 1e6

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


@dataclass
class CalibData:
    x: torch.Tensor            # float32 (N, C, H, W), already normalised
    y: torch.Tensor | None     # int64 (N,), or (N, H, W) per-pixel classes, or None
    source: str                # what it was read from, for the report
    labels_from: str           # "data" | "model predictions" | "none"
    normalisation: str = "as given"   # what was done to the values, for the report

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def synthetic(self) -> bool:
        return self.source.startswith("synthetic")


def load_calibration(spec: str, input_shape: tuple[int, int, int] | None, samples: int = 256,
                     mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                     seed: int = 0) -> CalibData:
    """Load up to `samples` calibration samples shaped like `input_shape` (C, H, W); with None, the shape
    is the data's own (NCHW, or NHWC with 1, 3 or 4 channels last; images at the first image's size)."""
    if samples < 1:
        raise CalibrationError(f"--calib-samples must be >= 1, got {samples}")
    path = Path(spec)
    if ":" in spec and not path.exists():
        x, y = _from_callable(spec)
        source = f"callable {spec}"
        already_normalised = True
    elif not path.exists():
        raise CalibrationError(f"calibration data {spec} does not exist; pass an image folder, an .npz/.npy file "
                               "or package.module:callable")
    elif path.is_dir():
        x, y = _from_image_folder(path, input_shape)
        source = f"image folder {path}"
        already_normalised = False
    elif path.suffix in (".npz", ".npy"):
        x, y = _from_numpy(path)
        source = f"{path.suffix[1:]} file {path}"
        already_normalised = x.dtype.kind == "f"
    else:
        raise CalibrationError(f"calibration data {spec}: unsupported file type {path.suffix!r}; "
                               "pass an image folder, an .npz/.npy file or package.module:callable")
    x = np.asarray(x)
    x = _to_nchw(x, input_shape or shape_of(x, spec), spec)
    normalisation = "as given (already normalised floats)"
    if not already_normalised:
        x = x.astype(np.float32) / 255.0
        if mean is not None and std is not None:
            if len(mean) != x.shape[1] or len(std) != x.shape[1]:
                raise CalibrationError(f"--mean/--std give {len(mean)}/{len(std)} values for {x.shape[1]}-channel "
                                       f"data; pass one value per channel, e.g. --mean {','.join(['0.5'] * x.shape[1])}")
            x = (x - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]
            normalisation = (f"8-bit pixels / 255, then (x - mean) / std with mean {_fmt_floats(mean)}, "
                             f"std {_fmt_floats(std)}")
        else:
            normalisation = ("8-bit pixels / 255 only: no mean/std is known for this model; pass --mean and --std "
                             "if it was trained with normalised inputs")
    x = x.astype(np.float32, copy=False)
    if y is not None:
        y = np.asarray(y)
        per_pixel = y.ndim == 3 and y.shape[0] == len(x) and y[0].size > 1   # (N, H, W): a class per pixel
        y = _labels(y if per_pixel else y.reshape(-1), spec)
        if len(y) != len(x):
            raise CalibrationError(f"calibration data {spec}: {len(x)} inputs but {len(y)} labels")
    if len(x) > samples:
        # A fixed-seed subset, so reruns see the same samples whatever order the files come in.
        keep = np.sort(np.random.default_rng(seed).choice(len(x), samples, replace=False))
        x, y = x[keep], (y[keep] if y is not None else None)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(1).sum())
        raise CalibrationError(f"calibration data {spec}: {bad} of {len(x)} samples contain NaN or Inf; clean the data")
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak > MAX_ABS_INPUT:
        raise CalibrationError(f"calibration data {spec}: values reach {peak:.3g}; model inputs are normalised "
                               f"(|x| up to {MAX_ABS_INPUT:.0e} accepted): pass normalised data, or 8-bit images "
                               "with --mean/--std")
    labels = torch.from_numpy(y.astype(np.int64)) if y is not None else None
    return CalibData(torch.from_numpy(np.ascontiguousarray(x)), labels, source,
                     "data" if labels is not None else "none", normalisation)


def _labels(y: np.ndarray, spec: str) -> np.ndarray:
    """Class indices: whole numbers >= 0. Float labels are refused rather than truncated."""
    if y.dtype.kind not in "iub":
        if y.dtype.kind != "f" or not np.isfinite(y).all() or not (y == np.round(y)).all():
            raise CalibrationError(f"calibration data {spec}: labels must be class indices (whole numbers), got "
                                   f"dtype {y.dtype} with values like {y.reshape(-1)[:3].tolist()!s:.60}; "
                                   "store y as integers")
    if len(y) and y.min() < 0:
        raise CalibrationError(f"calibration data {spec}: label {int(y.min())} is negative; labels are class "
                               "indices from 0")
    return y.astype(np.int64)


def _fmt_floats(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def shape_of(x: np.ndarray, spec: str) -> tuple[int, int, int]:
    """The (C, H, W) of a batch of samples: NCHW, or NHWC when the last axis (not the second) looks like
    1, 3 or 4 channels; a batch of 2-D samples is one channel."""
    if x.ndim == 3 and x.shape[0] > 0:
        return (1, int(x.shape[1]), int(x.shape[2]))
    if x.ndim != 4 or x.shape[0] == 0:
        raise CalibrationError(f"calibration data {spec} has shape {tuple(x.shape)}; expected a batch of images "
                               "(N, C, H, W) or (N, H, W, C)")
    _, a, b, c = (int(v) for v in x.shape)
    if c in (1, 3, 4) and a not in (1, 3, 4):
        return (c, a, b)
    return (a, b, c)


def _to_nchw(x: np.ndarray, input_shape: tuple[int, int, int], spec: str) -> np.ndarray:
    c, h, w = input_shape
    if x.size == 0 or x.shape[0] == 0:
        raise CalibrationError(f"calibration data {spec} is empty; it needs at least one sample of shape {c}x{h}x{w}")
    if x.ndim == 3 and x.shape[1:] == (c, h, w)[1:] and c == 1:
        x = x[:, None]
    if x.ndim == 4 and x.shape[1:] != (c, h, w) and x.shape[1:] == (h, w, c):
        x = x.transpose(0, 3, 1, 2)  # NHWC, as images usually come
    if x.ndim != 4 or x.shape[1:] != (c, h, w):
        raise CalibrationError(f"calibration data {spec} has shape {tuple(x.shape)}, expected (N, {c}, {h}, {w}) "
                               f"or (N, {h}, {w}, {c}); pass data matching --input-shape")
    if x.dtype.kind not in "fiu":
        raise CalibrationError(f"calibration data {spec} has dtype {x.dtype}, expected numbers")
    return x


def _from_numpy(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - numpy raises several types for a bad file
        raise CalibrationError(f"calibration data {path} does not load with numpy ({str(e)[:120]})") from None
    if isinstance(data, np.ndarray):
        return data, None
    with data:
        keys = list(data.keys())
        xkey = next((k for k in ("x", "images", "data", "inputs") if k in keys), None)
        if xkey is None:
            raise CalibrationError(f"calibration data {path} has arrays {keys[:10]}; it needs one named 'x' "
                                   "(and optionally 'y')")
        ykey = next((k for k in ("y", "labels", "targets") if k in keys), None)
        try:   # an .npz reads its arrays lazily: a bad member (object dtype, truncated) fails here
            return data[xkey], (data[ykey] if ykey else None)
        except Exception as e:  # noqa: BLE001 - numpy raises several types for a bad member
            raise CalibrationError(f"calibration data {path}: array {xkey!r} or its labels do not load "
                                   f"({str(e)[:120]}); save plain numeric arrays with numpy.savez") from None


def _from_image_folder(path: Path, input_shape: tuple[int, int, int] | None) -> tuple[np.ndarray, np.ndarray | None]:
    from PIL import Image

    classes = sorted(p for p in path.iterdir() if p.is_dir())
    if classes:
        files = [(f, i) for i, d in enumerate(classes) for f in sorted(d.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        files = [(f, -1) for f in sorted(path.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise CalibrationError(f"calibration folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                               "put images in one sub-folder per class")
    if input_shape is None:   # the first image's size, RGB: every image is resized to it
        first = _decode(files[0][0], "RGB", None)
        input_shape = (3, first.shape[0], first.shape[1])
    c, h, w = input_shape
    mode = {1: "L", 3: "RGB"}.get(c)
    if mode is None:
        raise CalibrationError(f"image folders give 1 or 3 channels, but --input-shape has {c}; pass an .npz instead")
    arrays = []
    for f, _ in files:
        arrays.append(_decode(f, mode, (w, h)))
    x = np.stack(arrays)
    x = x[:, None] if c == 1 else x.transpose(0, 3, 1, 2)
    labels = np.array([i for _, i in files])
    return x, (labels if classes else None)


MAX_IMAGE_PIXELS = 64 * 2**20   # a calibration image larger than 8192 x 8192 is refused, not decoded


def _decode(f: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 (H, W[, C]), resized to `size` (W, H); a file that claims more pixels than
    MAX_IMAGE_PIXELS (a decompression bomb) is refused before it is decoded."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise CalibrationError(f"calibration image {f} claims {im.width}x{im.height} pixels, over the "
                                           f"{MAX_IMAGE_PIXELS // 2**20} M-pixel limit; resize it or remove it")
                im = im.convert(mode)
                if size is not None:
                    im = im.resize(size, Image.BILINEAR)
                return np.asarray(im, dtype=np.uint8)
    except CalibrationError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises many types (bombs, truncation, unknown formats)
        raise CalibrationError(f"calibration image {f} does not decode ({type(e).__name__}: {str(e)[:100]}); "
                               "remove or replace it") from None


def _from_callable(spec: str) -> tuple[np.ndarray, np.ndarray | None]:
    mod_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except Exception as e:  # noqa: BLE001
        raise CalibrationError(f"--calib {spec}: cannot import ({type(e).__name__}: {e})") from None
    try:
        return _collect(fn, spec)
    except CalibrationError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's callable; its failure is theirs to fix
        raise CalibrationError(f"--calib {spec} raised {type(e).__name__}: {str(e)[:120]}; fix the callable or "
                               "pass an .npz") from None


def _collect(fn, spec: str) -> tuple[np.ndarray, np.ndarray | None]:
    xs, ys = [], []
    for batch in _iterate(fn(), spec):
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            xb, yb = batch
            ys.append(np.asarray(yb.cpu() if isinstance(yb, torch.Tensor) else yb).reshape(-1))
        else:
            xb = batch
        xb = xb.detach().cpu().numpy() if isinstance(xb, torch.Tensor) else np.asarray(xb)
        xs.append(xb if xb.ndim == 4 else xb[None])
    if not xs:
        raise CalibrationError(f"--calib {spec} yielded no batches; it must return an iterable of x or (x, y)")
    if ys and len(ys) != len(xs):
        raise CalibrationError(f"--calib {spec} yielded labels for some batches only")
    return np.concatenate(xs).astype(np.float32), (np.concatenate(ys) if ys else None)


def _iterate(obj, spec: str) -> Iterable:
    try:
        return iter(obj)
    except TypeError:
        raise CalibrationError(f"--calib {spec} returned {type(obj).__name__}, not an iterable of batches") from None


def synthetic_calibration(input_shape: tuple[int, int, int], samples: int, seed: int) -> CalibData:
    """Standard-normal inputs, used only when no --calib is given; reported as such everywhere."""
    g = torch.Generator().manual_seed(seed)
    return CalibData(torch.randn((samples, *input_shape), generator=g), None, "synthetic standard-normal inputs "
                     "(no --calib given)", "none")
