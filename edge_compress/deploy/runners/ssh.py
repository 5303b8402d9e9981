"""SSH runner: one of the runtimes (ONNX Runtime, or TensorRT through trtexec) run on a device over SSH.

The model is copied to the device and timed there by the device's own tools (``device_bench.py``
for ONNX Runtime, trtexec for TensorRT); the statistics come back as the same ``LatencyStats`` as a
local run, with ``where`` naming the device. The transport is ``SshConnection``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_compress.deploy.errors import DeviceError
from edge_compress.deploy.runners.base import (
    Runner,
    TimedRuns,
    check_counts,
    fixed_count,
    not_adaptive,
    onnx_input_names,
)
from edge_compress.deploy.runners.ssh_connection import SshConnection
from edge_compress.deploy.runners.stats import LatencyStats
from edge_compress.deploy.runners.trtexec_log import stats_from_trtexec

REMOTE_RUNTIMES = ("onnxruntime", "trtexec")


class SshRunner(Runner):
    """Times ``onnx_path`` on the device behind ``connection`` with ``runtime`` (onnxruntime or trtexec).

    ``onnxruntime`` runs on ``providers`` at ``threads`` (the device's Python, numpy and onnxruntime);
    ``trtexec`` builds a ``precision`` engine with the device's TensorRT ``trt_version``.
    """

    def __init__(self, connection: SshConnection, onnx_path: str | os.PathLike[str], runtime: str = "onnxruntime",
                 *, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int | None = 1,
                 trt_version: str | None = None, precision: str = "fp16", trtexec_path: str | None = None,
                 workspace_mb: int | None = None) -> None:
        if runtime not in REMOTE_RUNTIMES:
            raise ValueError(f"unknown remote runtime {runtime!r}; choose one of {list(REMOTE_RUNTIMES)}")
        if runtime == "trtexec" and not trt_version:
            raise ValueError("the trtexec runtime needs the device's TensorRT version (runtime.version)")
        self.onnx_path = Path(onnx_path)
        super().__init__(f"ssh-{runtime}-runner-{self.onnx_path.name}")
        self.connection, self.remote_runtime = connection, runtime
        self.providers, self.remote_threads = tuple(providers), threads
        self.trt_version, self.precision = trt_version, precision
        self.trtexec_path, self.workspace_mb = trtexec_path or "trtexec", workspace_mb
        self._input_names: list[str] = []

    @staticmethod
    def tools_for(runtime: str) -> tuple[str, ...]:
        """The device tools ``runtime`` (onnxruntime, or trtexec / tensorrt) needs."""
        return ("python3", "numpy", "onnxruntime") if runtime == "onnxruntime" else ("trtexec",)

    def _activate_impl(self) -> None:
        if not self.onnx_path.is_file():
            raise DeviceError(f"ONNX model not found: {self.onnx_path}")
        self.connection.check(require=self.tools_for(self.remote_runtime), trtexec_path=self.trtexec_path)
        self._input_names = onnx_input_names(self.onnx_path)

    def _deactivate_impl(self) -> None:
        pass  # each measurement cleans up its own folder on the device

    def measure(self, feed: Mapping[str, np.ndarray], warmup_runs: int, timed_runs: TimedRuns, *,
                batch_size: int | None = None) -> LatencyStats:
        """A fixed run count on the device (a ``StopRule``'s ``fixed_runs``): the benchmark there times all
        its runs in one call, so nothing here can stop it early; the statistics say so."""
        self._require_active("measure")
        check_counts(warmup_runs, timed_runs)
        runs = fixed_count(timed_runs)
        shape = tuple(np.asarray(next(iter(feed.values()))).shape)
        if self.remote_runtime == "onnxruntime":
            stats = self.connection.measure_onnx(self.onnx_path, warmup=warmup_runs, runs=runs,
                                                 threads=self.remote_threads, input_shape=shape,
                                                 providers=self.providers)
            return not_adaptive(stats, timed_runs, f"the device's benchmark ran a fixed {runs} runs in one call")
        options: dict[str, Any] = {"workspace_mb": self.workspace_mb, "iterations": runs}
        result = self.connection.measure_trtexec(self.onnx_path, self.trt_version, self.precision,
                                                 trtexec_path=self.trtexec_path, **options)
        stats = stats_from_trtexec(result, batch_size=batch_size or (shape[0] if shape else 1),
                                   where=self.where, warmup_runs=warmup_runs)
        return not_adaptive(stats, timed_runs, "trtexec on the device times its own iterations and duration")

    @property
    def runtime(self) -> str:
        return self.remote_runtime

    @property
    def where(self) -> str:
        return self.connection.where
