"""ONNX Runtime session set-up shared by the runner and the engine builder.

Providers are always named explicitly: left to itself, ONNX Runtime silently runs on the CPU when a
GPU provider cannot load, and a CPU number would then be reported as a GPU one.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnxruntime as ort

from edge_compress.deploy.errors import ProviderError

CPU_PROVIDER = "CPUExecutionProvider"

GRAPH_OPTIMIZATION_LEVELS: dict[str, ort.GraphOptimizationLevel] = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def check_providers(providers: Sequence[str]) -> list[str]:
    """Validate provider names (a typo is an error here, not a silent CPU fallback later)."""
    if isinstance(providers, str) or not providers:
        raise ValueError(f"providers must be a non-empty sequence of names, got {providers!r}")
    known = ort.get_all_providers()
    unknown = [p for p in providers if p not in known]
    if unknown:
        raise ValueError(f"unknown ONNX Runtime execution provider(s) {unknown}; known: {known}")
    return list(providers)


def unavailable_message(asked: str, actual: str | None = None) -> str:
    """One line: what was asked, what this machine has, and how to fix it."""
    available = ", ".join(ort.get_available_providers())
    ran = f" (session ran {actual})" if actual else ""
    return (
        f"execution provider {asked} is not available in onnxruntime {ort.__version__} on this "
        f"machine{ran}; available: {available}. Fix: install the onnxruntime build for it (e.g. "
        f"onnxruntime-gpu for CUDA/TensorRT) or use a device profile for this machine"
    )


def select_providers(providers: Sequence[str], require: bool) -> list[str]:
    """The requested providers this build has, in order; CPU last if none of them is.

    With ``require`` the first requested provider must be available, else ``ProviderError``.
    """
    requested = check_providers(providers)
    available = ort.get_available_providers()
    if require and requested[0] not in available:
        raise ProviderError(unavailable_message(requested[0]))
    usable = [p for p in requested if p in available]
    return usable or [CPU_PROVIDER]


def check_threads(threads: int | None) -> int | None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be an int >= 1 or None, got {threads!r}")
    return threads


def session_options(threads: int | None, graph_optimization: str) -> ort.SessionOptions:
    """Session options with the thread count pinned when given."""
    if graph_optimization not in GRAPH_OPTIMIZATION_LEVELS:
        raise ValueError(
            f"unknown graph_optimization {graph_optimization!r}; "
            f"choose one of {sorted(GRAPH_OPTIMIZATION_LEVELS)}"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = GRAPH_OPTIMIZATION_LEVELS[graph_optimization]
    if check_threads(threads) is not None:
        options.intra_op_num_threads = threads
        # A CNN is a chain of ops: parallelism is inside ops, and a second pool would only
        # compete with the first for the same cores.
        options.inter_op_num_threads = 1
    return options
