"""The report pass: accuracy on the calibration data, report.json (checked against its schema) and report.html,
and the run's result. report.json and report.html are written by report/build.py's `write_report`, which `compress validate` shares."""
from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from edge_compress.deploy import environment_info

from .. import accuracy as acc
from ..search.budget import Budget, Metrics
from ..search.guard import HELD_OUT_EVERY
from ..calib import CalibData
from ..config import CompressConfig
from ..costmodel.model import factors_from_profile, predict_layer_ms
from ..output import OutputDir, sha256_file
from ..report.build import build_report, layer_table, versions
from .build import Built
from .export import Exported
from .load import Loaded, Plan
from .measure import Measured
from .prune import Pruned
from .recover import Recovered

log = logging.getLogger("compress")


@dataclass
class CompressResult:
    verdict: str                  # "met" | "missed"
    exit_code: int
    out_dir: Path
    budget: Budget
    original: Metrics
    final: Metrics
    report: dict = field(repr=False)
    model: nn.Module | None = field(default=None, repr=False)   # the pruned model (also in model.pruned.pt)

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "exit_code": self.exit_code, "out_dir": str(self.out_dir),
                "budget": self.budget.to_dict(), "original": self.original.to_dict(), "final": self.final.to_dict(),
                "report": str(self.out_dir / "report.json")}


@dataclass(frozen=True)
class RunResults:
    """Every pass's result, as the report reads them."""
    plan: Plan
    loaded: Loaded
    pruned: Pruned
    recovered: Recovered
    exported: Exported
    built: Built
    measured: Measured


def accuracy(loaded: Loaded, pruned: Pruned) -> dict:
    """Accuracy for the model's task (compress/accuracy.py) on the calibration data: against its labels when it has
    its own (and the task uses them), else against the original model. With an accuracy limit, on the samples it
    holds out, with the limit's verdict under `guard` (search/guard.py)."""
    calib: CalibData = loaded.calib
    task, model = loaded.task, pruned.model
    if calib.synthetic:
        return {"evaluated": False, "why": "no calibration data given", "task": task.kind}
    if pruned.guard is not None:
        return _guarded_accuracy(loaded, pruned)
    labels = calib.y if calib.labels_from == "data" and task.kind != acc.OUTPUTS else None
    result = acc.evaluate(loaded.model.module, model, calib.x, labels, task)
    out = {"evaluated": True, "data": calib.source, "samples": len(calib), "labels_from": calib.labels_from,
           **result}
    if calib.labels_from == "data" and labels is None:
        out["labels_used"] = False
    return out


def _guarded_accuracy(loaded: Loaded, pruned: Pruned) -> dict:
    guard = pruned.guard
    check = guard.check(pruned.model)
    out = {"evaluated": True, "data": f"{loaded.calib.source}, the samples held out for the accuracy limit (every "
                                      f"{HELD_OUT_EVERY}th)",
           "samples": guard.samples, "labels_from": loaded.calib.labels_from, **check.accuracy,
           "guard": guard.record(check, binding=pruned.accuracy_binding is not None)}
    if loaded.calib.labels_from == "data" and guard.labels is None:
        out["labels_used"] = False
    log.info("accuracy limit %s: %s", "met" if check.ok else "MISSED", guard.describe(check.value))
    return out


def accuracy_misses(record: dict) -> list[str]:
    """The accuracy limit as the verdict reads it: ['accuracy limit ...'] when missed, else []."""
    guard = record.get("guard")
    if not guard or guard["met"]:
        return []
    unit = " points" if guard["unit"] == "points" else " %"
    relation = ">" if guard["unit"] == "points" else "<"
    return [f"accuracy ({guard['flag']}) {guard['value']:.2f}{unit} {relation} {guard['limit']:g}{unit}"]


def compose(config: CompressConfig, r: RunResults, verdict: str, accuracy_record: dict, notes: list[str],
            timings_s: dict, od: OutputDir) -> dict:
    profile, loaded, m = r.plan.profile, r.loaded.model, r.measured
    if r.pruned.details:
        od.write_json("scores.json", {"criterion": r.plan.criterion_name, **r.pruned.details})
    factors = factors_from_profile(profile)
    shares = None
    final_layers = r.pruned.evaluation.layers
    if factors.usable and final_layers:
        times = {c.name: predict_layer_ms(c, factors) for c in final_layers}
        total = sum(times.values())
        shares = {k: v / total for k, v in times.items()}
    calib = r.loaded.calib
    options = config.to_dict()
    pruning = r.pruned.record if r.recovered.record is None else {**r.pruned.record, "recovery": r.recovered.record}
    export = r.exported.record if r.built.quantization is None else {**r.exported.record,
                                                                      "quantization": r.built.quantization}
    engine = r.built.engine if m.measured_on is None else {**r.built.engine, "measured_on": m.measured_on}
    return build_report(
        verdict=verdict,
        inputs={"model": {"path": str(loaded.path), "sha256": _model_sha256(config, loaded), "kind": loaded.kind,
                          "arch": loaded.arch, "arch_kwargs": loaded.arch_kwargs},
                "target": profile.to_dict(), "input_shape": list(r.loaded.shape),
                "budget_requested": {k: v for k, v in config.budget.model_dump().items() if v is not None}
                or {"profile_defaults": profile.budget.__dict__},
                "criterion": r.plan.criterion_name, "seed": config.seed, "step": config.prune.step,
                "calibration": {"source": calib.source, "samples": len(calib), "labels_from": calib.labels_from},
                "options": options},
        budget=m.budget.to_dict(),
        original={**m.original.metrics.to_dict(),
                  "latency_stats": m.original.stats.to_dict() if m.original.stats else None},
        final={**m.metrics.to_dict(), "latency_stats": m.stats.to_dict() if m.stats else None,
               "memory_kind": "predicted: weights + largest layer input/output activations "
                              f"({profile.runtime.precision}), runtime overhead not included"},
        pruning=pruning,
        layers=layer_table(m.original.layers, final_layers, shares),
        export=export,
        engine=engine,
        accuracy=accuracy_record,
        timings_s=timings_s,
        environment={"versions": versions(), **environment_info()},
        artifacts=od.artifacts(),
        notes=notes,
        relative_to=od.tmp,
    )


def _model_sha256(config: CompressConfig, loaded) -> str:
    """The input file's hash; for a model passed as an object, that of its state dict as torch.save writes it."""
    if not isinstance(config.load.model, nn.Module):
        return sha256_file(loaded.path)
    import torch

    buffer = io.BytesIO()
    torch.save(loaded.module.state_dict(), buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()
