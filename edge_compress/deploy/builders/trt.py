"""TensorRT engines through the Python API: one code path from TensorRT 8.2 to 10.x, and 11.x.

What differs by version (TensorRT release notes and API docs; docs/devices.md):
- network creation: the EXPLICIT_BATCH flag is required below 10 and deprecated (implicit) from 10;
  11.x builds strongly typed networks (STRONGLY_TYPED), where precision comes from the ONNX types and
  the FP16 / INT8 builder flags are gone;
- workspace: `config.max_workspace_size` below 8.4, `config.set_memory_pool_limit(WORKSPACE, ...)` from 8.4;
- I/O: bindings (`num_bindings`, `execute_v2`) below 8.5, named tensors (`num_io_tensors`,
  `set_tensor_address`, `execute_async_v3`) from 8.5; bindings are gone in 10.
The decisions are pure functions of the version (`build_plan`), tested without TensorRT; the build
imports TensorRT lazily and needs it and a GPU (its tests skip with the reason otherwise). The runner
that loads the engine is `deploy/runners/trt.py`.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from edge_compress.deploy.atomic import atomic_path, sha256_file
from edge_compress.deploy.builders.trtexec import parse_trt_version
from edge_compress.deploy.errors import DeployError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class BuildPlan:
    version: tuple[int, int, int]
    explicit_batch_flag: bool        # pass NetworkDefinitionCreationFlag.EXPLICIT_BATCH
    strongly_typed: bool             # 11.x: precision from the model's types, no precision flags
    workspace_api: str               # "max_workspace_size" or "memory_pool_limit"
    io_api: str                      # "bindings" or "named_tensors"
    precision_flags: tuple[str, ...]  # BuilderFlag names to set
    dla_core: int | None             # run on this DLA core with GPU fallback
    workspace_mib: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_plan(trt_version: str | tuple[int, int, int], precision: str = "fp16", workspace_mib: int = 1024,
               dla_core: int | None = None) -> BuildPlan:
    """What the build must do on this TensorRT version for this precision (no TensorRT needed)."""
    try:
        v = parse_trt_version(trt_version) if isinstance(trt_version, str) else tuple(trt_version)
    except ValueError as e:
        raise DeployError(str(e)) from None
    if precision not in PRECISIONS:
        raise DeployError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if v < (8, 2, 0):
        raise DeployError(f"TensorRT {'.'.join(map(str, v))} is older than 8.2, the oldest this tool supports")
    if workspace_mib < 1:
        raise DeployError("the TensorRT workspace must be at least 1 MiB")
    strongly_typed = v >= (11, 0, 0)
    flags: tuple[str, ...] = ()
    if not strongly_typed:
        flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16")}[precision]
    if dla_core is not None and not strongly_typed:
        flags += ("GPU_FALLBACK",)
    return BuildPlan(v, v < (10, 0, 0), strongly_typed, "max_workspace_size" if v < (8, 4, 0) else "memory_pool_limit",
                     "bindings" if v < (8, 5, 0) else "named_tensors", flags, dla_core, workspace_mib)


def import_tensorrt():
    try:
        import tensorrt as trt  # noqa: PLC0415 - optional dependency, the [tensorrt] extra
    except ImportError:
        raise DeployError("the TensorRT Python package is not installed here; install the [tensorrt] extra on a "
                          "machine with an NVIDIA GPU, or build on the device with build_engine.sh") from None
    return trt


@dataclass(frozen=True)
class TrtEngine:
    path: Path
    plan: BuildPlan
    timing_cache: Path | None
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "plan": self.plan.to_dict(),
                "timing_cache": str(self.timing_cache) if self.timing_cache else None, "sha256": self.sha256}


def build_engine(onnx_path: str | os.PathLike[str], out_path: str | os.PathLike[str], precision: str = "fp16",
                 workspace_mib: int = 1024, dla_core: int | None = None,
                 timing_cache: str | os.PathLike[str] | None = None,
                 input_shapes: Mapping[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] | None = None
                 ) -> TrtEngine:
    """Build a serialized engine from ONNX with the Python API (written atomically).

    `input_shapes` maps dynamic inputs to (min, opt, max) shapes for an optimization profile.
    """
    trt = import_tensorrt()
    plan = build_plan(trt.__version__, precision, workspace_mib, dla_core)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if plan.explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if plan.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DeployError(f"TensorRT could not parse {Path(onnx_path).name}: {errors[:300]}")
    config = builder.create_builder_config()
    if plan.workspace_api == "max_workspace_size":
        config.max_workspace_size = workspace_mib << 20
    else:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    for flag in plan.precision_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if dla_core is not None:
        if builder.num_DLA_cores <= dla_core:
            raise DeployError(f"DLA core {dla_core} asked for, but this device has {builder.num_DLA_cores}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
    if input_shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in input_shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    cache = None
    if timing_cache is not None:
        data = Path(timing_cache).read_bytes() if Path(timing_cache).is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DeployError(f"TensorRT failed to build an engine from {Path(onnx_path).name}; rerun with -v for its log")
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    if cache is not None:
        with atomic_path(timing_cache) as tmp:
            tmp.write_bytes(bytes(cache.serialize()))
    return TrtEngine(Path(out_path), plan, Path(timing_cache) if timing_cache else None, sha256_file(out_path))
