"""onnx-simplifier with a real numerical check and a safe fallback."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import onnxsim

from .atomic import atomic_write_bytes, sha256_bytes
from .errors import ExportError, one_line

_DIFF_MARKER = "changes after optimization"


@dataclass(frozen=True)
class SimplifyResult:
    """``simplified`` False means ``path`` holds the input model unchanged, for ``reason``."""

    simplified: bool
    check_n: int
    nodes_before: int
    nodes_after: int
    reason: str | None
    path: Path
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "simplified": self.simplified,
            "check_n": self.check_n,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "reason": self.reason,
            "path": str(self.path),
            "sha256": self.sha256,
        }


def simplify_onnx(in_path: str | Path, out_path: str | Path, check_n: int = 3) -> SimplifyResult:
    """Simplify ``in_path`` into ``out_path``, verified on ``check_n`` random inputs.

    A simplification that onnxsim cannot do, whose outputs differ from the
    original's, or whose result fails the ONNX checker is not an error: the input
    model is written to ``out_path`` byte for byte and ``reason`` says why, so the
    pipeline can carry on with the unsimplified model and report it. An input that
    is not a valid ONNX model raises ExportError.
    """
    if isinstance(check_n, bool) or not isinstance(check_n, int) or check_n < 1:
        # With check_n=0 onnxsim compares nothing and its ok flag is always True.
        raise ValueError(f"check_n must be an int >= 1 so that onnxsim actually verifies outputs, got {check_n!r}")
    original_bytes, original = _load_valid(Path(in_path))
    simplified, reason = _try_simplify(original, check_n)
    if simplified is None:
        payload, nodes_after = original_bytes, len(original.graph.node)
    else:
        payload, nodes_after = simplified.SerializeToString(), len(simplified.graph.node)
    target = atomic_write_bytes(out_path, payload)
    return SimplifyResult(
        simplified=simplified is not None,
        check_n=check_n,
        nodes_before=len(original.graph.node),
        nodes_after=nodes_after,
        reason=reason,
        path=target,
        sha256=sha256_bytes(payload),
    )


def _load_valid(path: Path) -> tuple[bytes, onnx.ModelProto]:
    try:
        data = path.read_bytes()
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ExportError(f"cannot simplify {path}: not a valid ONNX model ({one_line(exc)})") from exc
    return data, model


def _try_simplify(model: onnx.ModelProto, check_n: int) -> tuple[onnx.ModelProto | None, str | None]:
    """(simplified model, None) on success, (None, one-line reason) otherwise."""
    work = onnx.ModelProto()
    work.CopyFrom(model)  # onnxsim may edit its argument; the fallback needs the original
    log = io.StringIO()
    try:
        # onnxsim narrates its check on stdout; keep it for the failure reason instead.
        with contextlib.redirect_stdout(log):
            simplified, ok = onnxsim.simplify(work, check_n=check_n)
    except Exception as exc:  # noqa: BLE001 - any onnxsim failure means "keep the original"
        return None, f"onnxsim failed: {type(exc).__name__}: {one_line(exc)}"
    if not ok:
        detail = next((line.strip() for line in log.getvalue().splitlines() if _DIFF_MARKER in line), "")
        return None, f"onnxsim's numerical check on {check_n} random inputs failed" + (f": {detail}" if detail else "")
    try:
        onnx.checker.check_model(simplified, full_check=True)
    except Exception as exc:  # noqa: BLE001
        return None, f"simplified model fails the ONNX checker: {one_line(exc)}"
    return simplified, None
