"""ONNX Runtime runner: runs an ONNX model (or a saved ORT engine) on this machine."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_compress.deploy.errors import ProviderError, ProviderFallbackWarning, RunnerStateError
from edge_compress.deploy.ort_session import (
    check_providers,
    check_threads,
    select_providers,
    session_options,
    unavailable_message,
)
from edge_compress.deploy.runners.base import InferenceRunner


class OrtRunner(InferenceRunner):
    """Runs ``onnx_path`` in an ``InferenceSession`` on explicitly named execution providers.

    If the first provider in ``providers`` cannot run here: with ``require_provider`` activation
    raises ``ProviderError``; without it the runner falls back to the next available provider,
    warns (``ProviderFallbackWarning``) and records ``fallback = "<asked> unavailable, ran <actual>"``.
    After activation ``provider`` is the provider the session really uses.
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int | None = None,
        require_provider: bool = False,
        graph_optimization: str = "all",
    ) -> None:
        self.onnx_path = Path(onnx_path)
        super().__init__(name=f"onnxrt-runner-{self.onnx_path.name}")
        self.requested_providers = check_providers(providers)
        self._threads = check_threads(threads)
        self.require_provider = require_provider
        # Build the options now so that a bad level fails at construction, not at activation.
        self._options = session_options(threads, graph_optimization)
        self.graph_optimization = graph_optimization
        self.fallback: str | None = None
        self._session: ort.InferenceSession | None = None
        # Names are cached at activation so that ``infer`` (timed) does not query the session.
        self._input_names: list[str] = []
        self._output_names: list[str] = []

    def _activate_impl(self) -> None:
        if not self.onnx_path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.onnx_path}")
        asked = self.requested_providers[0]
        providers = select_providers(self.requested_providers, self.require_provider)
        session = ort.InferenceSession(
            str(self.onnx_path), sess_options=self._options, providers=providers
        )
        # Checked after creation too: a provider can be "available" yet fail to load (missing
        # CUDA libraries), and ONNX Runtime then quietly continues on the CPU.
        actual = session.get_providers()[0]
        self.fallback = None
        if actual != asked:
            if self.require_provider:
                raise ProviderError(unavailable_message(asked, actual))
            self.fallback = f"{asked} unavailable, ran {actual}"
            warnings.warn(f"{self.name}: {self.fallback}", ProviderFallbackWarning, stacklevel=3)
        self._session = session
        self._input_names = [i.name for i in session.get_inputs()]
        self._output_names = [o.name for o in session.get_outputs()]

    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._active_session().run(None, dict(feed))
        return dict(zip(self._output_names, outputs, strict=True))

    def _deactivate_impl(self) -> None:
        self._session = None

    def _active_session(self) -> ort.InferenceSession:
        if self._session is None:
            raise RunnerStateError(f"{self.name}: no session; call activate() first")
        return self._session

    @property
    def input_names(self) -> list[str]:
        self._active_session()
        return list(self._input_names)

    @property
    def input_shapes(self) -> dict[str, tuple[int | str, ...]]:
        """Input shapes from the session; symbolic dimensions are strings ("?" when unnamed)."""
        return {
            i.name: tuple(d if isinstance(d, (int, str)) else "?" for d in i.shape)
            for i in self._active_session().get_inputs()
        }

    @property
    def output_names(self) -> list[str]:
        self._active_session()
        return list(self._output_names)

    @property
    def runtime(self) -> str:
        return f"onnxruntime {ort.__version__}"

    @property
    def provider(self) -> str:
        return self._active_session().get_providers()[0]

    @property
    def threads(self) -> int | None:
        return self._threads
