"""trtexec runner: builds and times a TensorRT engine with NVIDIA's trtexec on this machine.

trtexec times the engine itself (it warms up for a duration and runs its own iterations), so this
runner measures and does not infer; its numbers come from the log's performance summary, parsed by
``trtexec_log``. The other TensorRT path is the Python API runner (``runners/trt.py``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_compress.deploy.builders.trtexec import trtexec_command
from edge_compress.deploy.errors import DeployError
from edge_compress.deploy.runners.base import (
    Runner,
    TimedRuns,
    check_counts,
    fixed_count,
    not_adaptive,
    onnx_input_names,
)
from edge_compress.deploy.runners.stats import LatencyStats
from edge_compress.deploy.runners.trtexec_log import parse_trtexec_log, stats_from_trtexec

TRTEXEC_HINT = ("trtexec ships with TensorRT (on JetPack it is /usr/src/tensorrt/bin/trtexec): add its folder to "
                "PATH or set runtime.trtexec_path in the profile")


def find_trtexec(trtexec_path: str | None = None) -> str | None:
    """The trtexec executable: ``trtexec_path`` or ``trtexec`` on PATH, else JetPack's place; None if absent."""
    found = shutil.which(trtexec_path or "trtexec")
    if found is None and trtexec_path is None and os.access("/usr/src/tensorrt/bin/trtexec", os.X_OK):
        found = "/usr/src/tensorrt/bin/trtexec"
    return found


class TrtexecRunner(Runner):
    """Times ``onnx_path`` as a TensorRT engine built by the local trtexec of version ``trt_version``."""

    def __init__(self, onnx_path: str | os.PathLike[str], trt_version: str, precision: str = "fp16",
                 trtexec_path: str | None = None, timeout_s: float = 1800, **trtexec_options: Any) -> None:
        self.onnx_path = Path(onnx_path)
        super().__init__(f"trtexec-runner-{self.onnx_path.name}")
        self.trt_version, self.precision = trt_version, precision
        self.trtexec_path, self.timeout_s = trtexec_path, timeout_s
        self.trtexec_options = trtexec_options
        self._tool: str | None = None
        self._input_names: list[str] = []
        # The full trtexec log of the latest measurement: the build's and the timing's own record.
        self.last_log: str | None = None

    def _activate_impl(self) -> None:
        if not self.onnx_path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.onnx_path}")
        self._tool = find_trtexec(self.trtexec_path)
        if self._tool is None:
            raise DeployError(f"trtexec is not installed here: {TRTEXEC_HINT}")
        self._input_names = onnx_input_names(self.onnx_path)

    def _deactivate_impl(self) -> None:
        self._tool = None

    def command(self, engine_path: str, timed_runs: int) -> list[str]:
        """The trtexec argv that builds the engine and times ``timed_runs`` iterations."""
        return trtexec_command(str(self.onnx_path), engine_path, self.trt_version, self.precision,
                               trtexec_path=self._tool or self.trtexec_path or "trtexec",
                               iterations=timed_runs, **self.trtexec_options)

    def measure(self, feed: Mapping[str, np.ndarray], warmup_runs: int, timed_runs: TimedRuns, *,
                batch_size: int | None = None) -> LatencyStats:
        """trtexec times for its own iterations and duration (a ``StopRule``'s ``fixed_runs`` iterations);
        nothing here sees single runs to stop on, and the statistics say so."""
        self._require_active("measure")
        check_counts(warmup_runs, timed_runs)
        with tempfile.TemporaryDirectory(prefix="compress-trtexec-") as tmp:
            argv = self.command(str(Path(tmp) / "model.engine"), fixed_count(timed_runs))
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s, check=False)
            except subprocess.TimeoutExpired:
                raise DeployError(f"trtexec on {self.onnx_path.name} took longer than {self.timeout_s:g} s") from None
        self.last_log = proc.stdout + proc.stderr
        if proc.returncode != 0:
            tail = [ln for ln in self.last_log.splitlines() if ln.strip()][-1:] or ["no output"]
            raise DeployError(f"trtexec failed on {self.onnx_path.name} with exit status {proc.returncode}: {tail[0]}")
        stats = stats_from_trtexec(parse_trtexec_log(self.last_log), batch_size=batch_size or _batch_of(feed),
                                   where=self.where, warmup_runs=warmup_runs)
        return not_adaptive(stats, timed_runs, "trtexec times its own iterations and duration")

    @property
    def runtime(self) -> str:
        return f"tensorrt {self.trt_version} (trtexec)"


def _batch_of(feed: Mapping[str, np.ndarray]) -> int:
    first = np.asarray(next(iter(feed.values()))) if feed else np.zeros(())
    return int(first.shape[0]) if first.ndim >= 1 and first.shape[0] >= 1 else 1
