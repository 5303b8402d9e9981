"""Deployment: ONNX Runtime engines and runners with latency statistics, trtexec build commands.

Imports onnx, onnxruntime and numpy only; the pipeline passes plain values (paths, shapes, names).
"""

from edge_compress.deploy.bundle import render_build_script, write_build_script
from edge_compress.deploy.environment import environment_info
from edge_compress.deploy.errors import DeployError, ProviderError, ProviderFallbackWarning, RunnerStateError
from edge_compress.deploy.ort_engine import OrtEngine, build_ort_engine
from edge_compress.deploy.ort_runner import OrtRunner
from edge_compress.deploy.runner import Runner
from edge_compress.deploy.stats import LatencyStats
from edge_compress.deploy.trtexec import parse_trt_version, trtexec_command

__all__ = [
    "DeployError",
    "LatencyStats",
    "OrtEngine",
    "OrtRunner",
    "ProviderError",
    "ProviderFallbackWarning",
    "Runner",
    "RunnerStateError",
    "build_ort_engine",
    "environment_info",
    "parse_trt_version",
    "render_build_script",
    "trtexec_command",
    "write_build_script",
]
