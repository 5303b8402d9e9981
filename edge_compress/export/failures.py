"""Turn an exporter's exception into a one-line, actionable ExportError.

The exporters' own messages run to dozens of lines (the TorchScript one also
prints its IR graph); the pipeline prints one line per failed stage, so this
module extracts the operator, locates the module that calls it and says what to
change.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import torch

from .errors import ExportError, one_line
from .op_locator import ModuleRef, modules_using_aten_overload, modules_using_torchscript_op

# TorchScript exporter: UnsupportedOperatorError and SymbolicValueError wording.
_TS_UNSUPPORTED = re.compile(r"Exporting the operator '(?P<op>[^']+)' to ONNX opset version")
_TS_ADDED_IN = re.compile(r"Support for this operator was added in version (?P<ver>\d+)")
_TS_SYMBOLIC = re.compile(r"Unsupported: ONNX export of (?:operator )?(?P<op>[A-Za-z_][\w:.]*)")
_TS_NAMESPACE = re.compile(r"operator with unrecognized namespace (?P<op>[\w:.]+)")
# Dynamo exporter: DispatchError names the ATen overload it found no ONNX function for.
_DYNAMO_OVERLOAD = re.compile(r"OpOverload\(op='(?P<op>[\w.]+)', overload='[\w.]*'\)")


def explain_export_failure(
    exc: BaseException,
    model: torch.nn.Module,
    example: torch.Tensor,
    opset: int,
    exporter: str,
) -> ExportError:
    """Build the ExportError for ``exc``; the caller raises it ``from exc``."""
    if exporter == "dynamo":
        op, min_opset = _dynamo_op(exc), None
        users = modules_using_aten_overload(model, example, op) if op else []
    else:
        op, min_opset = _torchscript_op(exc)
        users = modules_using_torchscript_op(model, example, op) if op else []
    if op is None:
        return ExportError(
            f"ONNX export with the {exporter} exporter at opset {opset} failed: "
            f"{type(_innermost(exc)).__name__}: {one_line(_innermost(exc))}"
        )
    return ExportError(
        f"cannot export operator '{op}' to ONNX opset {opset} with the {exporter} exporter"
        f"{_used_by(users)}; fix: {_fix(opset, min_opset)}"
    )


def _torchscript_op(exc: BaseException) -> tuple[str | None, int | None]:
    for err in _chain(exc):
        text = str(err)
        match = _TS_UNSUPPORTED.search(text) or _TS_NAMESPACE.search(text)
        if match is None:
            match = _TS_SYMBOLIC.search(text)
            if match is None:
                continue
        op = match.group("op").rstrip(".")
        if "::" not in op:
            op = f"aten::{op}"
        added = _TS_ADDED_IN.search(text)
        return op, int(added.group("ver")) if added else None
    return None, None


def _dynamo_op(exc: BaseException) -> str | None:
    for err in _chain(exc):
        match = _DYNAMO_OVERLOAD.search(str(err))
        if match:
            namespace, _, name = match.group("op").partition(".")
            return f"{namespace}::{name}"
    return None


def _used_by(users: list[ModuleRef]) -> str:
    if not users:
        return ""
    shown = [f"'{name}' ({cls})" if name else f"the model's own forward ({cls})" for name, cls in users[:3]]
    more = f" and {len(users) - 3} more" if len(users) > 3 else ""
    return " (used by module " + ", ".join(shown) + more + ")"


def _fix(opset: int, min_opset: int | None) -> str:
    if min_opset is not None and min_opset > opset:
        return f"export at opset >= {min_opset} (if the target runtime supports it), or replace the op"
    return "export at a higher opset, or replace the op with one ONNX supports"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _innermost(exc: BaseException) -> BaseException:
    return list(_chain(exc))[-1]
