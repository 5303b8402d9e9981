"""Predicted vs measured latency per layer: ONNX Runtime's profiler against the cost model's parts."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .model import factors_from_profile, layer_costs, layer_times_ms

CONV_OPS = {"Conv", "FusedConv", "NchwcConv", "ConvTranspose", "Gemm", "FusedGemm", "MatMul", "QLinearConv",
            "ConvInteger", "QLinearMatMul", "MatMulInteger"}


def profile_layers_ort(model: nn.Module, example_input: torch.Tensor, opset: int = 17, threads: int | None = 1,
                       runs: int = 100) -> tuple[dict[str, float], dict]:
    """Per-layer times from ONNX Runtime's own profiler (median per node over `runs`).

    ONNX nodes are mapped to conv/linear layers by execution order (ONNX Runtime fuses BN/ReLU/Add
    into convs and renames some nodes, e.g. `.../Relu_output_0_nchwc`, so names alone do not map);
    each layer also gets the small ops that run after it, up to the next conv (adds, pads, layout
    reorders), because the cost model carries those in its per-layer overhead.
    """
    import onnxruntime as ort

    from edge_compress.deploy import session_options
    from edge_compress.export import export_onnx

    costs = layer_costs(model.eval(), example_input)
    with tempfile.TemporaryDirectory(prefix="costfit-prof-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model.eval(), example_input, path, opset=opset)
        opts = session_options(threads, "all")
        opts.enable_profiling, opts.profile_file_prefix = True, str(Path(tmp) / "trace")
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: example_input.numpy()}
        for _ in range(runs):
            sess.run(None, feed)
        trace = json.loads(Path(sess.end_profiling()).read_text())
    nodes: dict[str, tuple[str, list[float]]] = {}
    for ev in trace:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            node = nodes.setdefault(ev["name"][:-len("_kernel_time")], (ev["args"].get("op_name", ""), []))
            node[1].append(ev["dur"])
    order = list(nodes)
    convs = [n for n in order if nodes[n][0] in CONV_OPS]
    meta = {"onnx_conv_nodes": len(convs), "layers": len(costs), "other_ms": 0.0, "runs": runs}
    if len(convs) != len(costs):
        meta["mapping"] = (f"not mapped: ONNX Runtime ran {len(convs)} conv/gemm nodes for {len(costs)} "
                           "conv/linear layers")
        return {}, meta
    out: dict[str, float] = {}
    idx = -1
    for n in order:
        ms = float(np.median(nodes[n][1])) / 1e3
        if nodes[n][0] in CONV_OPS:
            idx += 1
            out[costs[idx].name] = out.get(costs[idx].name, 0.0) + ms
        else:
            meta["other_ms"] += ms
            name = costs[max(idx, 0)].name
            out[name] = out.get(name, 0.0) + ms
    agree = sum(_scope_agrees(node, c.name) for node, c in zip(convs, costs))
    meta["mapping"] = (f"by execution order: {len(costs)} conv/gemm nodes onto {len(costs)} layers; "
                       f"the ONNX scope names agree for {agree} of them")
    return out, meta


def _scope_agrees(node: str, layer: str) -> bool:
    parts = layer.split(".")
    known = set(parts) | {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return all(s in known for s in node.strip("/").split("/")[:-1])


def explain(model: nn.Module, input_shape, profile, measured_per_layer: dict[str, float] | None = None) -> list[dict]:
    """One row per conv/linear layer: the prediction's parts, the bound that wins, and the measured time
    where given (name -> ms, e.g. from `profile_layers_ort`)."""
    from edge_compress.device_profiles import load_profile

    profile = load_profile(profile) if isinstance(profile, str) else profile
    shape = tuple(input_shape)
    if len(shape) == 3:
        shape = (profile.measurement.batch_size, *shape)
    f = factors_from_profile(profile)
    rows = []
    for c in layer_costs(model.eval(), torch.zeros(shape)):
        row = {"name": c.name, "kind": c.cost_kind, "in_channels": c.in_channels, "out_channels": c.out_channels,
               "macs": c.macs, "compute_ms": None, "memory_ms": None, "overhead_ms": f.layer_overhead_ms,
               "predicted_ms": None, "bound": None, "measured_ms": None, "error_pct": None}
        if f.usable:
            comp, mem = layer_times_ms(c, f)
            row.update(compute_ms=comp, memory_ms=mem, predicted_ms=max(comp, mem) + f.layer_overhead_ms,
                       bound="compute" if comp >= mem else "memory")
        m = (measured_per_layer or {}).get(c.name)
        if m is not None:
            row["measured_ms"] = m
            if row["predicted_ms"] is not None and m > 0:
                row["error_pct"] = 100 * (row["predicted_ms"] / m - 1)
        rows.append(row)
    return rows


def _cell(v, spec: str) -> str:
    return f"{'-':>{spec.split('.')[0].lstrip('+')}}" if v is None else format(v, spec)


def format_rows(rows: list[dict]) -> str:
    head = (f"{'layer':<24} {'kind':<9} {'in':>5} {'out':>5} {'MMACs':>8} {'pred ms':>9} {'bound':<7} "
            f"{'meas ms':>9} {'err %':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['name'][:24]:<24} {r['kind']:<9} {r['in_channels']:>5} {r['out_channels']:>5} "
                     f"{r['macs'] / 1e6:>8.2f} {_cell(r['predicted_ms'], '9.4f')} {r['bound'] or '-':<7} "
                     f"{_cell(r['measured_ms'], '9.4f')} {_cell(r['error_pct'], '+7.1f')}")
    return "\n".join(lines)


