"""`compress validate model.onnx --target T --latency-ms N`: latency validation of any ONNX model, no pruning.

The model is measured on the target exactly as the pipeline measures its final model (the measure pass's
`measure_onnx`: the profile's warm-up and run counts, threads and execution provider; over SSH with --device),
and the same report.json / report.html come out (report/build.py's `build_report` and `write_report`), with the same verdict and exit codes (0 met, 1 missed, 2 bad input).
Targets that cannot be measured from here are refused: a prediction needs the PyTorch layers.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .search.budget import BudgetSpec, Metrics
from .errors import EXIT_BUDGET_MISSED, EXIT_OK, InputError
from .evaluate import LatencyEvaluator, measured_kind
from .output import OutputDir, check_out_dir, sha256_file
from .passes.measure import measure_onnx
from .report.build import build_report, versions, write_report

log = logging.getLogger("compress")

MAX_INPUT_ELEMENTS = 2**28   # 1 GiB of float32: far above any edge model's input


@dataclass
class ValidateResult:
    verdict: str
    exit_code: int
    out_dir: Path
    metrics: Metrics
    report: dict

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "exit_code": self.exit_code, "out_dir": str(self.out_dir),
                "final": self.metrics.to_dict()}


def validate(onnx_path: str | Path, target: str = "host", latency_ms: str | float | None = None,
             memory_mb: str | float | None = None, params: str | float | None = None,
             input_shape: tuple[int, ...] | None = None, out: str | Path | None = None, device=None,
             seed: int = 0) -> ValidateResult:
    from edge_compress.device_profiles import load_profile
    from edge_compress.deploy import environment_info

    path = Path(onnx_path)
    model = _load_onnx(path)
    profile = load_profile(target)
    shape = _input_shape(model, input_shape)
    example = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))
    check_out_dir(Path(out) if out else Path("validated") / f"{path.stem}-{profile.name}", [path, Path(str(target))])
    if device is None:
        _check_loads(path)
    evaluator = LatencyEvaluator(profile, example, device=device)
    if not evaluator.measured:
        raise InputError(f"target {profile.name} cannot be measured from here (its latency would be a prediction, "
                         "which needs the PyTorch model); validate on host or pass --device user@host[:port]")
    params_count = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    bytes_per = {"fp32": 4, "fp16": 2, "int8": 1}[profile.runtime.precision]
    spec = BudgetSpec.from_options(latency_ms, None, memory_mb, None, params, profile.budget.latency_ms,
                                   profile.budget.memory_mb, allow_empty=True)
    relative = [n for n in ("latency_ms", "memory_mb", "params")
                if getattr(spec, n, None) is not None and getattr(getattr(spec, n), "relative", False)]
    if relative:
        raise InputError(f"validate needs absolute budgets (there is no original to take a share of): "
                         f"--{relative[0].replace('_', '-')} must be a number, e.g. --latency-ms 2.5")
    started = time.perf_counter()
    try:
        stats = measure_onnx(evaluator, path)
    finally:
        evaluator.close()
    memory = (params_count + _peak_activation_pair(model, shape)) * bytes_per / 2**20
    metrics = Metrics(stats.median_ms, measured_kind(stats), memory, None, params_count)
    budget = spec.resolve(metrics)
    misses = budget.misses(metrics)
    verdict = "no-budget" if spec.empty else ("missed" if misses else "met")
    notes = ["validation only: nothing was pruned or exported; memory is predicted as in compress: weights "
             f"(initializers) + the largest Conv/Gemm/MatMul input and output activations, at {profile.runtime.precision}"]
    if spec.empty:
        notes.append("no budget given: a latency report only (exit 0); pass --latency-ms, --memory-mb or --params "
                     "to gate on it")
    if misses:
        notes.append("budget missed: " + "; ".join(misses))
    folder = Path(out) if out else Path("validated") / f"{path.stem}-{profile.name}"
    with OutputDir(folder, inputs=[path, Path(str(target))]) as od:
        od.attach_log("compress")
        od._close_log()   # the log is an artifact: its hash must be final
        report = build_report(
            verdict=verdict, mode="validate",
            inputs={"model": {"path": str(path), "sha256": sha256_file(path), "kind": "onnx", "arch": None,
                              "arch_kwargs": {}},
                    "target": profile.to_dict(), "input_shape": list(shape),
                    "budget_requested": {k: v for k, v in (("latency_ms", latency_ms), ("memory_mb", memory_mb),
                                                           ("params", params)) if v is not None}
                    or {"profile_defaults": profile.budget.__dict__},
                    "criterion": None, "seed": seed, "calibration": None, "options": {}},
            budget=budget.to_dict(),
            original={**metrics.to_dict(), "latency_stats": stats.to_dict()},
            final={**metrics.to_dict(), "latency_stats": stats.to_dict(),
                   "memory_kind": "predicted: weights (ONNX initializers) + largest layer input/output "
                                  f"activations ({profile.runtime.precision}), runtime overhead not included"},
            accuracy={"evaluated": False, "why": "validate measures latency only"},
            pruning={"criterion": None, "rounds": [], "groups": []},
            layers=[],
            export={"onnx": {"path": str(path), "opset": _opset(model), "sha256": sha256_file(path),
                             "exporter": "none: the ONNX model was given"}},
            engine={"kind": profile.runtime.engine, "measured_on": device.address if device else "local"},
            timings_s={"measure": round(time.perf_counter() - started, 3)},
            environment={"versions": versions(), **environment_info()},
            artifacts=od.artifacts(),
            notes=notes,
        )
        write_report(od, report)
        out_dir = od.commit()
    log.debug("%s: %.3f ms (%s) against %s", verdict.upper(), metrics.latency_ms, metrics.latency_kind,
              budget.to_dict())
    return ValidateResult(verdict, EXIT_BUDGET_MISSED if verdict == "missed" else EXIT_OK, out_dir, metrics, report)


def _peak_activation_pair(model, shape: tuple[int, ...]) -> int:
    """Elements of the largest input + output pair of any Conv/Gemm/MatMul, from ONNX shape inference at
    `shape` (the same lower bound on peak activations compress predicts from the PyTorch layers)."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    dims = fixed.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, shape):
        d.ClearField("dim_param")
        d.dim_value = int(v)
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed)
    except Exception:  # noqa: BLE001 - an op shape inference does not know: weights only, said in the note
        return 0
    sizes = {}
    for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        d = [x.dim_value for x in v.type.tensor_type.shape.dim]
        if d and all(x > 0 for x in d):
            sizes[v.name] = int(np.prod(d))
    best = 0
    for node in inferred.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose"):
            best = max(best, sizes.get(node.input[0], 0) + sum(sizes.get(o, 0) for o in node.output))
    return best


def _load_onnx(path: Path):
    import onnx

    if not path.is_file():
        raise InputError(f"{path}: no such file; pass the ONNX model to validate")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 - any failure to read it is the user's file to fix
        raise InputError(f"{path} is not a valid ONNX model ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                         "export it again or pass the right file") from None
    return model


def _input_shape(model, given: tuple[int, ...] | None) -> tuple[int, ...]:
    if given:
        shape = tuple(int(v) for v in given)
        if not shape or min(shape) < 1:
            raise InputError(f"--input-shape {'x'.join(map(str, shape))} must have positive sizes, e.g. 1x3x224x224")
    else:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        shape = tuple(d.dim_value for d in dims)
        if not shape or any(v <= 0 for v in shape):
            raise InputError(f"the model's input has dynamic dimensions {[d.dim_param or d.dim_value for d in dims][:8]}; "
                             "pass --input-shape NxCxHxW")
    # Checked before anything is allocated: a crafted model can declare an input of terabytes.
    if int(np.prod(shape, dtype=np.float64)) > MAX_INPUT_ELEMENTS:
        raise InputError(f"input shape {'x'.join(map(str, shape))} is {np.prod(shape, dtype=np.float64) * 4 / 2**30:.3g} "
                         f"GiB as float32, over the {MAX_INPUT_ELEMENTS * 4 // 2**30} GiB this tool allocates for one "
                         "input; pass a smaller --input-shape")
    return shape


def _check_loads(path: Path) -> None:
    """ONNX Runtime must accept the model before anything is measured: an operator of an unknown domain is the
    file's problem (exit 2), not ours."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own Fail/InvalidGraph/NotImplemented types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: ONNX Runtime cannot load this model ({first[:160]}); export it with standard "
                         "ONNX operators or measure it where its custom operators are registered") from None


def _opset(model) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
