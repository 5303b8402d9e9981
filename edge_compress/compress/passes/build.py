"""The build pass: the target's engine from model.onnx. ONNX Runtime (FP32, or INT8 quantized on the calibration
data) is built here when the target is measured here; TensorRT gets a build script and a device bundle (engines
are specific to the GPU and TensorRT version); other engines are built on the device from model.onnx."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from edge_compress.deploy import build_ort_engine, trtexec_command, write_build_script
from edge_compress.deploy import write_device_bundle

from ..calib import CalibData
from ..config import CompressConfig
from ..errors import InputError
from ..evaluate import LatencyEvaluator
from ..output import OutputDir
from .export import Exported
from .load import Loaded, Plan
from .timing import Timer

log = logging.getLogger("compress")


@dataclass(frozen=True)
class Built:
    engine: dict = field(repr=False)                    # the report's `engine` section
    engine_file: Path | None = None                     # the file to deploy, which the verdict times here
    quantization: dict | None = field(default=None, repr=False)   # export.quantization in the report
    notes: tuple[str, ...] = ()


def build(config: CompressConfig, plan: Plan, loaded: Loaded, exported: Exported, evaluator: LatencyEvaluator,
          od: OutputDir, timer: Timer) -> Built:
    profile, rt, example = plan.profile, plan.profile.runtime, loaded.example
    with timer.stage("engine"):
        if rt.engine == "onnxruntime" and evaluator.measured and evaluator.device is None:
            source, quantization, notes = exported.onnx, None, ()
            if rt.precision == "int8":
                source, quantization, notes = _quantize(od, loaded.calib, example, timer)
            engine = build_ort_engine(source, od.path("model.ort.onnx"),
                                      providers=rt.execution_providers, threads=profile.measurement.threads)
            # The portable file is the one to deploy and the one timed, like the original it is compared with:
            # model.ort.onnx holds NCHWc ops for this CPU's vector width and this ORT version only.
            deploy = {"deploy_file": source.name,
                      "deploy_why": f"{source.name} is the file to deploy and the file the verdict timed; "
                                    "model.ort.onnx is ONNX Runtime's optimised copy for this CPU and ONNX Runtime "
                                    "version only (it loads faster; at steady state it ran 1.5 % faster than "
                                    "model.onnx for ResNet-56 on the host, BENCHMARKS.md)"}
            return Built({"kind": "onnxruntime", "precision": rt.precision, **engine.to_dict(), **deploy},
                         source, quantization, notes)
        if rt.engine == "tensorrt":
            shapes = {"input": tuple(example.shape)} if config.export.dynamic_batch else None
            argv = trtexec_command("model.onnx", "model.engine", trt_version=rt.version, precision=rt.precision,
                                   workspace_mb=rt.workspace_mb, shapes=shapes,
                                   trtexec_path=rt.trtexec_path or "trtexec")
            write_build_script(od.path("build_engine.sh"), argv,
                               f"{profile.description}: build a TensorRT {rt.precision.upper()} engine")
            bundle = write_device_bundle(od.tmp, "model.onnx", tuple(example.shape), config.seed,
                                         "build_engine.sh", profile.description)
            return Built({"kind": "tensorrt", "built": False, "build_script": "build_engine.sh", "argv": argv,
                          "why_not_built": "TensorRT engines are specific to the GPU and TensorRT version: "
                                           "run build_engine.sh on the device", "bundle": bundle})
        return Built({"kind": rt.engine, "built": False,
                      "why_not_built": f"the engine is built on the device by {rt.engine} from model.onnx"})


def _quantize(od: OutputDir, calib: CalibData, example, timer: Timer) -> tuple[Path, dict, tuple[str, ...]]:
    """Static INT8 (QDQ) for ONNX Runtime, calibrated on the calibration data; the accuracy change is recorded."""
    from edge_compress.deploy import quantize_int8

    if calib.synthetic:
        raise InputError("INT8 quantization needs real calibration data to set its scales; pass --calib")
    n = len(calib)
    calib_part = calib.x[: max(1, n // 2)].numpy()
    check_part = calib.x[n // 2:].numpy() if n > 1 else calib_part
    with timer.stage("quantize"):
        q = quantize_int8(od.path("model.onnx"), od.path("model.int8.onnx"), calib_part,
                          check_inputs=check_part, batch_size=example.shape[0])
    note = (f"INT8 (QDQ) model: max abs output change {q.max_abs_error:.3g} against FP32 on "
            f"{q.check_samples} held-out calibration samples, top-1 agreement "
            f"{q.top1_agreement if q.top1_agreement is not None else 'n/a'}; the pruning rounds "
            "measured the FP32 model, the final latency is the INT8 engine's")
    return od.path("model.int8.onnx"), q.to_dict(), (note,)
