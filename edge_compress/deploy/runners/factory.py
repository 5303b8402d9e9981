"""The one place that decides which runner measures a model: from the target's engine, precision and
measurement method, and the device to reach (if any). Callers never branch on local vs SSH or on the
runtime; they ask ``make_runner`` and use the ``Runner`` it returns.

    local + onnxruntime          -> OrtRunner on the profile's execution providers
    local + tensorrt             -> TrtRunner (TensorRT Python API) where ``tensorrt`` imports, else
                                    TrtexecRunner where trtexec is installed, else OrtRunner on the
                                    profile's providers (ONNX Runtime's TensorRT execution provider)
    ssh   + onnxruntime          -> SshRunner timing device_bench.py on the device
    ssh   + tensorrt             -> SshRunner timing trtexec on the device
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_compress.deploy.runners.base import Runner
from edge_compress.deploy.runners.ort import OrtRunner
from edge_compress.deploy.runners.ssh import SshRunner
from edge_compress.deploy.runners.ssh_connection import SshConnection
from edge_compress.deploy.runners.trt import TrtRunner
from edge_compress.deploy.runners.trtexec import TrtexecRunner, find_trtexec

ENGINES = ("onnxruntime", "tensorrt")
METHODS = ("local", "ssh")
TENSORRT_PATHS = ("tensorrt-python", "trtexec", "onnxruntime-tensorrt-ep")


@dataclass(frozen=True)
class RunnerConfig:
    """What decides the runner: the target's runtime and how it is measured, as plain values."""

    engine: str
    precision: str
    method: str
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int | None = None
    require_provider: bool = False
    trt_version: str | None = None
    trtexec_path: str | None = None
    workspace_mb: int | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose one of {list(ENGINES)}")
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} measures nothing; a runner needs one of {list(METHODS)}")

    @classmethod
    def from_profile(cls, profile: Any, method: str | None = None) -> RunnerConfig:
        """From a device profile's ``runtime`` and ``measurement`` blocks (read, not imported);
        ``method`` overrides the profile's (``ssh`` when a device is given on the command line)."""
        rt, m = profile.runtime, profile.measurement
        return cls(engine=rt.engine, precision=rt.precision, method=method or m.method,
                   providers=tuple(rt.execution_providers or ("CPUExecutionProvider",)), threads=m.threads,
                   require_provider=rt.require_provider, trt_version=rt.version, trtexec_path=rt.trtexec_path,
                   workspace_mb=rt.workspace_mb)


def tensorrt_path(tensorrt_imports: bool, trtexec: str | None) -> str:
    """Which local TensorRT path runs: the Python API where it imports, else trtexec where installed,
    else ONNX Runtime's TensorRT execution provider (the profile's providers)."""
    if tensorrt_imports:
        return "tensorrt-python"
    return "trtexec" if trtexec is not None else "onnxruntime-tensorrt-ep"


def tensorrt_imports() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def make_runner(onnx_path: str | os.PathLike[str], config: RunnerConfig, device: SshConnection | None = None,
                workdir: str | os.PathLike[str] | None = None) -> Runner:
    """The runner that measures ``onnx_path`` as ``config`` says; ``device`` is required for ``ssh``.

    ``workdir`` holds what a runner builds on activation (a TensorRT engine); default: the model's folder.
    """
    if config.method == "ssh":
        if device is None:
            raise ValueError("an ssh measurement needs the device's SshConnection")
        return SshRunner(device, onnx_path, "onnxruntime" if config.engine == "onnxruntime" else "trtexec",
                         providers=config.providers, threads=config.threads or 1, trt_version=config.trt_version,
                         precision=config.precision, trtexec_path=config.trtexec_path,
                         workspace_mb=config.workspace_mb)
    if config.engine == "tensorrt":
        path = tensorrt_path(tensorrt_imports(), find_trtexec(config.trtexec_path))
        if path == "tensorrt-python":
            return TrtRunner(onnx_path, config.precision, config.workspace_mb or 1024,
                             workdir or Path(onnx_path).parent)
        if path == "trtexec":
            return TrtexecRunner(onnx_path, config.trt_version, config.precision, config.trtexec_path,
                                 workspace_mb=config.workspace_mb)
    return OrtRunner(onnx_path, providers=config.providers, threads=config.threads,
                     require_provider=config.require_provider)



def check_device(config: RunnerConfig, device: SshConnection) -> dict[str, str | None]:
    """Reach ``device`` and check it has the tools an ssh measurement of ``config`` needs; their versions."""
    return device.check(require=SshRunner.tools_for(config.engine), trtexec_path=config.trtexec_path or "trtexec")
