"""Deployment: builders (ONNX -> what a runtime loads) and runners (one interface that measures a model
locally or on a device over SSH, with ONNX Runtime or TensorRT), latency statistics, the device bundle.

Imports onnx, onnxruntime and numpy only (TensorRT and torch lazily, where a runner needs them); the
pipeline passes plain values (paths, shapes, names, a ``RunnerConfig``). These names are the public
interface: other packages import from ``edge_compress.deploy`` only.
"""

from edge_compress.deploy.atomic import atomic_path, atomic_write_text, current_umask
from edge_compress.deploy.builders.ort import OrtEngine, build_ort_engine
from edge_compress.deploy.builders.ort_quant import QuantResult, quantize_int8
from edge_compress.deploy.builders.trt import BuildPlan, TrtEngine, build_engine, build_plan
from edge_compress.deploy.builders.trtexec import parse_trt_version, trtexec_command
from edge_compress.deploy.bundle import render_build_script, write_build_script, write_device_bundle
from edge_compress.deploy.environment import cpu_fingerprint, environment_info
from edge_compress.deploy.errors import (
    DeployError,
    DeviceError,
    ProviderError,
    ProviderFallbackWarning,
    RunnerStateError,
)
from edge_compress.deploy.ort_session import session_options
from edge_compress.deploy.runners.adaptive import MedianPrecision, StopRule
from edge_compress.deploy.runners.base import InferenceRunner, Runner, measure_interleaved
from edge_compress.deploy.runners.factory import RunnerConfig, check_device, make_runner, tensorrt_path
from edge_compress.deploy.runners.ort import OrtRunner
from edge_compress.deploy.runners.ssh import SshRunner
from edge_compress.deploy.runners.ssh_connection import SshConnection, parse_ssh_address
from edge_compress.deploy.runners.stats import LatencyStats
from edge_compress.deploy.runners.trt import TrtRunner
from edge_compress.deploy.runners.trtexec import TrtexecRunner
from edge_compress.deploy.runners.trtexec_log import parse_trtexec_log, stats_from_trtexec

__all__ = [
    "BuildPlan",
    "DeployError",
    "DeviceError",
    "InferenceRunner",
    "LatencyStats",
    "MedianPrecision",
    "OrtEngine",
    "OrtRunner",
    "ProviderError",
    "ProviderFallbackWarning",
    "QuantResult",
    "Runner",
    "RunnerConfig",
    "RunnerStateError",
    "SshConnection",
    "SshRunner",
    "StopRule",
    "TrtEngine",
    "TrtRunner",
    "TrtexecRunner",
    "atomic_path",
    "atomic_write_text",
    "build_engine",
    "check_device",
    "build_ort_engine",
    "build_plan",
    "cpu_fingerprint",
    "current_umask",
    "environment_info",
    "make_runner",
    "measure_interleaved",
    "parse_ssh_address",
    "parse_trt_version",
    "parse_trtexec_log",
    "quantize_int8",
    "render_build_script",
    "session_options",
    "stats_from_trtexec",
    "tensorrt_path",
    "trtexec_command",
    "write_build_script",
    "write_device_bundle",
]
