"""TensorRT runner: runs a serialized engine (built by ``builders.trt.build_engine``) on the GPU.

TensorRT and torch (CUDA buffers, so no pycuda is needed) are imported on activation only, so this
module loads on machines without either. Given an ONNX model instead of an engine, the runner builds
the engine on activation (into ``workdir``), like Polygraphy's ``EngineFromNetwork`` loader.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edge_compress.deploy.builders.trt import build_engine, build_plan, import_tensorrt
from edge_compress.deploy.errors import DeployError
from edge_compress.deploy.runners.base import InferenceRunner


class TrtRunner(InferenceRunner):
    """Runs a serialized engine on the GPU; the same interface and statistics as the ONNX Runtime runner."""

    def __init__(self, model_path: str | os.PathLike[str], precision: str = "fp16", workspace_mib: int = 1024,
                 workdir: str | os.PathLike[str] | None = None):
        """``model_path``: a serialized engine, or an ``.onnx`` model built into ``workdir`` on activation."""
        super().__init__(f"TrtRunner({Path(model_path).name})")
        self.model_path = Path(model_path)
        self.precision, self.workspace_mib = precision, workspace_mib
        self.workdir = Path(workdir) if workdir is not None else self.model_path.parent
        self.engine_path = self.model_path
        self._names: list[str] = []

    def _activate_impl(self) -> None:
        import torch  # noqa: PLC0415 - CUDA buffers without pycuda

        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise DeployError("TensorRT needs an NVIDIA GPU, and none is visible here")
        self._trt, self._torch = trt, torch
        if self.model_path.suffix == ".onnx":
            out = self.workdir / f"{self.model_path.stem}.{self.precision}.engine"
            self.engine_path = build_engine(self.model_path, out, self.precision, self.workspace_mib).path
        self._plan = build_plan(trt.__version__)
        logger = trt.Logger(trt.Logger.WARNING)
        self._engine = trt.Runtime(logger).deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise DeployError(f"{self.engine_path.name} does not deserialize with TensorRT {trt.__version__} "
                              "(engines are specific to the TensorRT version and the GPU)")
        self._context = self._engine.create_execution_context()
        if self._plan.io_api == "named_tensors":
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            self._inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            self._outputs = [n for n in names if n not in self._inputs]
        else:
            names = [self._engine.get_binding_name(i) for i in range(self._engine.num_bindings)]
            self._inputs = [n for i, n in enumerate(names) if self._engine.binding_is_input(i)]
            self._outputs = [n for n in names if n not in self._inputs]
        self._names = names

    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch, trt = self._torch, self._trt
        tensors = {n: torch.from_numpy(np.ascontiguousarray(feed[n])).cuda() for n in self._inputs}
        outs = {}
        if self._plan.io_api == "named_tensors":
            for n, t in tensors.items():
                self._context.set_input_shape(n, tuple(t.shape))
                self._context.set_tensor_address(n, t.data_ptr())
            for n in self._outputs:
                shape = tuple(self._context.get_tensor_shape(n))
                dtype = torch.from_numpy(np.zeros(1, dtype=trt.nptype(self._engine.get_tensor_dtype(n)))).dtype
                outs[n] = torch.empty(shape, dtype=dtype, device="cuda")
                self._context.set_tensor_address(n, outs[n].data_ptr())
            stream = torch.cuda.current_stream()
            self._context.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
        else:
            bindings = [0] * len(self._names)
            for i, n in enumerate(self._names):
                if n in tensors:
                    self._context.set_binding_shape(i, tuple(tensors[n].shape))
                    bindings[i] = tensors[n].data_ptr()
            for i, n in enumerate(self._names):
                if n in self._outputs:
                    dtype = torch.from_numpy(np.zeros(1, dtype=trt.nptype(self._engine.get_binding_dtype(i)))).dtype
                    outs[n] = torch.empty(tuple(self._context.get_binding_shape(i)), dtype=dtype, device="cuda")
                    bindings[i] = outs[n].data_ptr()
            self._context.execute_v2(bindings)
            torch.cuda.synchronize()
        return {n: t.cpu().numpy() for n, t in outs.items()}

    def _deactivate_impl(self) -> None:
        self._context = self._engine = None

    @property
    def input_names(self) -> list[str]:
        return list(getattr(self, "_inputs", []))

    @property
    def runtime(self) -> str:
        return f"tensorrt {self._trt.__version__}"

    @property
    def provider(self) -> str:
        return f"TensorRT on {self._torch.cuda.get_device_name()}"
