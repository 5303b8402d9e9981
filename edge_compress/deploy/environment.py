"""Where a measurement ran: host, CPU and runtime versions, recorded with every number."""

from __future__ import annotations

import functools
import os
import platform
import socket
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

_CPUINFO = Path("/proc/cpuinfo")
# x86 kernels name the CPU in "model name"; ARM boards (Raspberry Pi, some Jetson kernels) only
# give "Model" or "Hardware", so those are the fallbacks, in order of how specific they are.
_CPU_MODEL_KEYS = ("model name", "Model", "Hardware", "Processor")


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows, else ``"unknown"``."""
    try:
        text = _CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip(), value.strip())
    for key in _CPU_MODEL_KEYS:
        if key in fields:
            return fields[key]
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """Logical CPUs this process may run on (respects taskset/cgroup affinity where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# The widest vector extension decides which kernels ONNX Runtime's MLAS picks, and so its speed per core.
_ISA_FLAGS = (("avx512f", "avx512"), ("avx2", "avx2"), ("avx", "avx"), ("sse4_2", "sse4.2"),
              ("sve", "sve"), ("asimd", "neon"))


def isa_level() -> str:
    """The widest SIMD extension /proc/cpuinfo lists (avx512, avx2, ..., neon), else the machine name."""
    try:
        text = _CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return next((name for flag, name in _ISA_FLAGS if flag in flags), platform.machine() or "unknown")


def cpu_fingerprint() -> dict[str, object]:
    """What a CPU cost model's factors depend on: the CPU model, its widest SIMD extension, usable cores."""
    return {"cpu": cpu_model(), "isa": isa_level(), "cores": usable_cores()}


@functools.lru_cache(maxsize=1)
def local_where() -> str:
    """One-line description of this machine for ``LatencyStats.where``."""
    return f"local: {socket.gethostname()}, {cpu_model()}, {usable_cores()} cores"


def environment_info() -> dict[str, object]:
    """Versions and hardware of this machine, as plain JSON values, to store next to results."""
    return {
        "python": platform.python_version(),
        "python_implementation": sys.implementation.name,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "ort_available_providers": list(ort.get_available_providers()),
    }
