"""ONNX Runtime "engine": the model as ONNX Runtime optimizes it for one execution provider."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from edge_compress.deploy.atomic import atomic_path, sha256_file
from edge_compress.deploy.errors import DeployError, ProviderError
from edge_compress.deploy.ort_session import select_providers, session_options, unavailable_message

_OPTIMIZATION_LEVEL = "all"


@dataclass(frozen=True)
class OrtEngine:
    """A saved ORT-optimized model and what it was built for."""

    path: Path
    provider: str
    optimization_level: str
    runtime_version: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["path"] = str(self.path)
        return data


def build_ort_engine(
    onnx_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int | None = None,
) -> OrtEngine:
    """Save the model as ONNX Runtime optimizes it (ORT_ENABLE_ALL) for ``providers[0]``.

    The saved graph is specific to that provider, this ONNX Runtime build and this kind of CPU:
    with the CPU provider, ORT_ENABLE_ALL rewrites Conv (+ Relu) into ``com.microsoft.nchwc`` ops
    whose block layout follows the CPU's vector width, so the file is not a portable ONNX model
    (ONNX Runtime logs a warning saying so). That is intended: it is the engine for that provider,
    to be built on and loaded (e.g. with ``OrtRunner``) on the target machine; keep the original
    ONNX model for anything else. Loading it skips the optimization work at start-up.

    The provider is required, not a preference: an engine built on a fallback provider would be
    an engine for a different target, so an unavailable one raises ``ProviderError``.
    The file is written atomically (temporary file, then ``os.replace``).
    """
    src = Path(onnx_path)
    out = Path(out_path)
    if not src.is_file():
        raise FileNotFoundError(f"ONNX model not found: {src}")
    if out.exists() and out.resolve() == src.resolve():
        raise ValueError(f"out_path must differ from onnx_path ({src}): the source would be replaced")
    selected = select_providers(providers, require=True)
    asked = selected[0]
    options = session_options(threads, _OPTIMIZATION_LEVEL)
    # ORT warns on every save that the engine is hardware-specific; the docstring and OrtEngine say so.
    options.log_severity_level = 3
    with atomic_path(out) as tmp:
        options.optimized_model_filepath = str(tmp)
        session = ort.InferenceSession(str(src), sess_options=options, providers=selected)
        actual = session.get_providers()[0]
        del session
        if actual != asked:
            raise ProviderError(unavailable_message(asked, actual))
        if tmp.stat().st_size == 0:
            raise DeployError(f"onnxruntime did not write the optimized model for {src}")
    return OrtEngine(
        path=out,
        provider=actual,
        optimization_level=_OPTIMIZATION_LEVEL,
        runtime_version=ort.__version__,
        sha256=sha256_file(out),
    )
