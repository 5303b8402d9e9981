"""report.json: everything the run decided and measured, in a versioned layout a build can gate on.

Every latency carries `latency_kind`, which says whether it was measured (where, how, how many runs) or
predicted (by which model).
"""
from __future__ import annotations

import platform
import sys
from importlib import metadata

REPORT_SCHEMA_VERSION = "1.2"


def versions() -> dict:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("edge-compress", "torch", "torch-pruning", "onnx", "onnxsim", "onnxruntime", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def layer_table(before: list, after: list, shares: dict[str, float] | None = None) -> list[dict]:
    """Per conv/linear layer: channels and MACs before and after pruning."""
    after_by_name = {c.name: c for c in after}
    rows = []
    for b in before:
        a = after_by_name.get(b.name)
        row = {"name": b.name, "kind": b.kind,
               "in_channels_before": b.in_channels, "in_channels_after": a.in_channels if a else None,
               "out_channels_before": b.out_channels, "out_channels_after": a.out_channels if a else None,
               "macs_before": b.macs, "macs_after": a.macs if a else None}
        if shares is not None:
            row["predicted_latency_share"] = shares.get(b.name)
        rows.append(row)
    return rows


def build_report(*, verdict: str, inputs: dict, budget: dict, original: dict, final: dict, pruning: dict,
                 layers: list[dict], export: dict, engine: dict, accuracy: dict, timings_s: dict,
                 environment: dict, artifacts: dict, notes: list[str]) -> dict:
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "verdict": verdict,
        "inputs": inputs,
        "budget": budget,
        "original": original,
        "final": final,
        "accuracy": accuracy,
        "pruning": pruning,
        "layers": layers,
        "export": export,
        "engine": engine,
        "timings_s": timings_s,
        "environment": environment,
        "artifacts": artifacts,
        "notes": notes,
    }
