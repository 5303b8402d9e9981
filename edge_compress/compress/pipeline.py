"""The pipeline driver: it only sequences the passes (compress/passes/): load -> measure the original -> prune to
the budget -> recover -> export -> build the engine -> measure the final model -> report. Each pass returns its
result and its notes; the driver hands results on and collects the notes in pass order.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from .config import CompressConfig
from .errors import EXIT_BUDGET_MISSED, EXIT_OK
from .evaluate import LatencyEvaluator
from .output import OutputDir
from .passes import build, export, load, measure, prune, recover, report
from .passes.report import CompressResult, RunResults
from .report.build import write_report
from .passes.timing import Timer

log = logging.getLogger("compress")


def run(config: CompressConfig) -> CompressResult:
    """One compression run; every check the options and files allow is made before the output folder opens."""
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    timer = Timer()
    with timer.stage("load"):
        plan = load.plan(config)
        loaded = load.load(config, plan)
    with timer.stage("cost model"):
        plan = load.on_this_machine(config, plan, loaded)
    with OutputDir(plan.out, list(plan.inputs)) as od:
        od.attach_log("compress")
        evaluator = LatencyEvaluator(plan.profile, loaded.example, device=plan.device,
                                     precision_pct=config.measure.timing_precision)
        try:
            return _run_passes(config, plan, loaded, evaluator, od, timer)
        finally:
            evaluator.close()


def _run_passes(config: CompressConfig, plan: load.Plan, loaded: load.Loaded, evaluator: LatencyEvaluator,
                od: OutputDir, timer: Timer) -> CompressResult:
    if not evaluator.measured and loaded.model.prunable:
        export.check_exportable(plan, loaded, timer)
    base = measure.baseline(plan, loaded, evaluator, timer)
    pruned = prune.prune(config, plan, loaded, evaluator, base, timer)
    recovered = recover.recover(config, plan, loaded, pruned, timer)
    exported = export.export(config, plan, loaded, pruned.model, od, timer)
    built = build.build(config, plan, loaded, exported, evaluator, od, timer)
    measured = measure.measure_final(plan, base, pruned.evaluation, evaluator, exported.onnx, built.engine_file,
                                     timer)
    with timer.stage("save"):
        saved = export.save_pruned(config, loaded.model, pruned.model, od)
        accuracy = report.accuracy(loaded, pruned)
    missed = measured.budget.misses(measured.metrics) + report.accuracy_misses(accuracy)
    verdict = "missed" if missed else "met"
    notes = [*plan.notes, *loaded.notes, *base.notes, *pruned.notes, *exported.notes, *built.notes,
             *measured.notes, *(["budget missed by the final measurement: " + "; ".join(missed)] if missed else []),
             *saved]
    results = RunResults(plan, loaded, pruned, recovered, exported, built, measured)
    composed = report.compose(config, results, verdict, accuracy, notes, timer.seconds, od)
    log.debug("%s: %s -> %s (%s)", verdict.upper(), measure.fmt_metrics(measured.original.metrics),
              measure.fmt_metrics(measured.metrics), od.final)
    write_report(od, composed)
    out_dir = od.commit()
    return CompressResult(verdict, EXIT_OK if verdict == "met" else EXIT_BUDGET_MISSED, out_dir, measured.budget,
                          measured.original.metrics, measured.metrics, composed, pruned.model)
