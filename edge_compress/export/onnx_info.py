"""Read-only facts about an ONNX model that results and checks report."""

from __future__ import annotations

import onnx

DEFAULT_DOMAINS = ("", "ai.onnx")


def default_opset(model: onnx.ModelProto) -> int | None:
    for entry in model.opset_import:
        if entry.domain in DEFAULT_DOMAINS:
            return int(entry.version)
    return None


def value_shape(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    """Dimensions as ints, symbolic ones as their name ("?" when unnamed)."""
    dims = value.type.tensor_type.shape.dim
    return tuple(
        int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims
    )


def op_types(model: onnx.ModelProto) -> tuple[str, ...]:
    """Sorted unique op types of the main graph; non-default domains are prefixed."""
    names = {
        node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}::{node.op_type}"
        for node in model.graph.node
    }
    return tuple(sorted(names))

