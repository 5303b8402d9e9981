"""report.json: everything the run decided and measured, in a versioned layout a build can gate on; the one
builder `compress` and `compress validate` share.

Every latency carries `latency_kind`, which says whether it was measured (where, how, how many runs) or
predicted (by which model).
"""
from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from .model import REPORT_SCHEMA_VERSION, Report
from .schema import ReportSchemaError, printable_report

Section = Union[BaseModel, dict[str, Any]]


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


def build_report(*, verdict: str, inputs: Section, budget: Section, original: Section, final: Section,
                 accuracy: Section, pruning: Section, layers: list, export: Section, engine: Section,
                 timings_s: dict, environment: Section, artifacts: dict, notes: list[str], mode: str | None = None,
                 relative_to: Path | None = None) -> dict:
    """report.json as a dict, checked against the typed report: `compress` and `compress validate` both build it
    here. Sections are typed values (report.model) or their dicts. Paths under `relative_to` (the output folder
    being written) become relative to it. A report that breaks its own types is our bug: ReportSchemaError, and
    nothing is written."""
    sections = {"schema_version": REPORT_SCHEMA_VERSION, "verdict": verdict, "mode": mode, "inputs": inputs,
                "budget": budget, "original": original, "final": final, "accuracy": accuracy, "pruning": pruning,
                "layers": layers, "export": export, "engine": engine, "timings_s": timings_s,
                "environment": environment, "artifacts": artifacts, "notes": notes}
    plain = {k: _plain(v) for k, v in sections.items() if not (k == "mode" and v is None)}
    if relative_to is not None:
        plain = _relative_paths(plain, relative_to)
    try:
        report = Report.model_validate(printable_report(plain))
    except ValidationError as e:
        raise ReportSchemaError(f"report.json does not match its types: {_first_error(e)}") from None
    return report.model_dump(mode="json", exclude_unset=True)


def write_report(od, report: dict) -> None:
    """report.json and the report.html rendered from it, into the output folder being written."""
    from .html import render_html

    od.write_json("report.json", report)
    od.path("report.html").write_text(render_html(report), encoding="utf-8")


def _plain(section):
    """A typed section as the keys it was given (unset optional fields stay absent, as in report.json)."""
    if isinstance(section, BaseModel):
        return section.model_dump(mode="python", exclude_unset=True)
    if isinstance(section, list):
        return [_plain(v) for v in section]
    return section


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
    return f"{path}: {err['msg']}"


def _relative_paths(obj, root: Path):
    """Artifact paths in the report are relative to the output folder (the temp folder is renamed)."""
    prefix = str(root) + "/"
    if isinstance(obj, dict):
        return {k: _relative_paths(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative_paths(v, root) for v in obj]
    if isinstance(obj, (str, Path)) and str(obj).startswith(prefix):
        return str(obj)[len(prefix):]
    return obj
