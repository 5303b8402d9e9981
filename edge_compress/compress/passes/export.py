"""The export pass: the pruned model to ONNX, simplified and checked against PyTorch (parity), and the pruned
PyTorch model saved as model.pruned.pt in the form its input had."""
from __future__ import annotations

import io
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from edge_compress.export import check_parity, export_onnx, simplify_onnx, tolerance_for

from ..config import CompressConfig
from ..model_io import LoadedModel, save_pruned_bytes
from ..output import OutputDir
from .load import Loaded, Plan
from .timing import Timer

log = logging.getLogger("compress")

# Parity reads at most this many input pixels (64 CIFAR images), and at least MIN_PARITY_SAMPLES images: an
# export error shows on any image, and PyTorch runs the check one fixed-shape batch at a time, so at 224x224
# 64 images cost more than the whole forward pass over the calibration set the compile is measured against.
PARITY_PIXELS = 64 * 32 * 32
MIN_PARITY_SAMPLES = 8


@dataclass(frozen=True)
class Exported:
    onnx: Path                                  # model.onnx: simplified, parity-checked
    record: dict = field(repr=False)            # the report's `export` section
    notes: tuple[str, ...] = ()


def check_exportable(plan: Plan, loaded: Loaded, timer: Timer) -> None:
    """Export the original once, before pruning, on targets whose latency is predicted (a measured target exports
    it to time it): a model the exporter refuses (e.g. an adaptive pooling that does not divide its input) is then
    a one-line error before the search, not after it."""
    with timer.stage("export_check"), tempfile.TemporaryDirectory(prefix="compress-export-check-") as tmp:
        export_onnx(loaded.model.module, loaded.example, Path(tmp) / "original.onnx", opset=plan.profile.runtime.opset)


def export(config: CompressConfig, plan: Plan, loaded: Loaded, model: nn.Module, od: OutputDir,
           timer: Timer) -> Exported:
    rt, example, calib, notes = plan.profile.runtime, loaded.example, loaded.calib, []
    with timer.stage("export"):
        log.info("exporting to ONNX (opset %d), simplifying and checking parity ...", rt.opset)
        raw = od.path("logs/model.raw.onnx")
        if config.export.dynamic_batch:   # batch >= 2 at export, so no size-1 shape is specialised into the graph
            wide = example.repeat(max(1, -(-2 // example.shape[0])), 1, 1, 1) if example.shape[0] < 2 else example
            exported = export_onnx(model, wide, raw, opset=rt.opset, dynamic_batch=True)
        else:
            exported = export_onnx(model, example, raw, opset=rt.opset)
        simplified = simplify_onnx(raw, od.path("model.onnx"), check_n=3)
        if not simplified.simplified:
            notes.append(f"onnx-simplifier failed, the unsimplified model was kept: {simplified.reason}")
        atol, rtol = tolerance_for("fp32")
        parity_inputs = calib.x[:parity_samples(calib.x, example.shape[0])]
        parity = check_parity(od.path("model.onnx"), model, parity_inputs, atol=atol, rtol=rtol,
                              batch_size=example.shape[0])
        parity.raise_if_failed()
        raw.unlink()
    # the raw export was simplified into model.onnx and deleted: its hash stays, its path does not
    raw_record = {k: v for k, v in exported.to_dict().items() if k != "path"}
    record = {"onnx": {**raw_record, "raw_export": "deleted after simplification"},
              "simplify": simplified.to_dict(), "parity": parity.to_dict()}
    return Exported(od.path("model.onnx"), record, tuple(notes))


def save_pruned(config: CompressConfig, loaded: LoadedModel, model: nn.Module, od: OutputDir) -> tuple[str, ...]:
    """model.pruned.pt, in the form the input had; the notes say how to reload it."""
    target = od.path("model.pruned.pt")
    in_memory = isinstance(config.load.model, nn.Module)
    if loaded.kind == "torchscript" and in_memory:
        torch.jit.save(model, str(target))
        return ("model.pruned.pt is the unchanged TorchScript module (TorchScript cannot be pruned)",)
    if loaded.kind == "torchscript":
        target.write_bytes(Path(loaded.path).read_bytes())
        return ("model.pruned.pt is the unchanged TorchScript input (TorchScript cannot be pruned)",)
    if loaded.kind == "module":
        buffer = io.BytesIO()
        try:
            torch.save(model, buffer)
        except Exception as e:  # noqa: BLE001 - a class pickle cannot reach (local, lambdas): keep the weights
            buffer = io.BytesIO()
            torch.save(model.state_dict(), buffer)
            note = (f"model.pruned.pt holds the pruned model's state dict only: the module itself cannot be pickled "
                    f"({type(e).__name__}: {str(e)[:100]}); the pruned layer widths are in report.json's layers, "
                    "and CompressResult.model is the pruned module")
        else:
            note = ("model.pruned.pt is the pruned module, pickled (the model was passed as an nn.Module): reload it "
                    "with torch.load(path, weights_only=False) where its class can be imported; "
                    "CompressResult.model is the same module")
        target.write_bytes(buffer.getvalue())
        return (note,)
    if loaded.arch is not None:
        target.write_bytes(save_pruned_bytes(model, loaded.arch, loaded.arch_kwargs))
        return ()
    torch.save(model, target)
    return ("model.pruned.pt is a pickled full module (the input was one): reload it with "
            "torch.load(path, weights_only=False) only if you trust it",)


def parity_samples(x: torch.Tensor, batch: int) -> int:
    """How many of the calibration images `x` the parity check reads: the PARITY_PIXELS budget (at least
    MIN_PARITY_SAMPLES, at most all of them), in whole batches of the exported `batch`."""
    pixels = max(1, math.prod(x.shape[2:]))   # (N, C, H, W): H x W; (N, F): 1
    n = min(len(x), max(MIN_PARITY_SAMPLES, PARITY_PIXELS // pixels))
    return max(batch, n // batch * batch)
