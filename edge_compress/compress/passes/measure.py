"""The measure pass: the original model evaluated on the target and the budget resolved from it (the one place a
budget is worked out), and the final model measured as it will run (the same measurement `compress validate`
makes)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..report import units
from ..search.budget import Budget, BudgetSpec, Metrics
from ..errors import InputError
from ..evaluate import Evaluation, LatencyEvaluator, measured_kind
from .load import Loaded, Plan
from .timing import Timer

log = logging.getLogger("compress")


@dataclass(frozen=True)
class Baseline:
    original: Evaluation
    budget: Budget
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Measured:
    """The final model as the engine runs it; `original` and `budget` rebased when both were timed interleaved."""
    stats: Any                     # LatencyStats of the final model, or None (predicted targets)
    metrics: Metrics               # the final numbers the verdict is judged on
    original: Evaluation
    budget: Budget
    measured_on: str | None
    notes: tuple[str, ...]


def resolve_budget(spec: BudgetSpec, original: Metrics) -> Budget:
    """The budget in absolute numbers: relative budgets (50 %, --speedup) are shares of `original`."""
    return spec.resolve(original)


def baseline(plan: Plan, loaded: Loaded, evaluator: LatencyEvaluator, timer: Timer) -> Baseline:
    notes = []
    with timer.stage("evaluate_original"):
        log.info("%s the original model on %s ...", "measuring" if evaluator.measured else "predicting",
                 plan.profile.name)
        original = evaluator.evaluate(loaded.model.module, full=True)
    budget = resolve_budget(plan.spec, original.metrics)
    log.info("original: %s; budget: %s", fmt_metrics(original.metrics), units.budget(budget.to_dict()))
    # Every budget kind pairs when it can: whether the final model got slower is judged on interleaved runs,
    # not on two measurements minutes apart (the search only uses pairs for a relative latency budget).
    if evaluator.can_pair and loaded.model.prunable:
        evaluator.set_reference(loaded.model.module)
    elif plan.spec.latency_fraction is not None and evaluator.measured:
        notes.append("the relative latency budget was judged on separate measurements of the original "
                     "and the pruned model (timing them interleaved needs a target measured on this "
                     "machine and a prunable model), so drift between the two runs counts")
    if budget.macs is not None and original.metrics.macs is None:
        raise InputError("--macs needs a model whose layers can be counted (a state dict with --arch, not TorchScript)")
    return Baseline(original, budget, tuple(notes))


def measure_final(plan: Plan, base: Baseline, final_eval: Evaluation, evaluator: LatencyEvaluator, onnx: Path,
                  engine_file: Path | None, timer: Timer) -> Measured:
    """Measure the file the user deploys (see deployed_file; not model.ort.onnx, ONNX Runtime's optimised copy for
    this CPU and ORT version, which the original is not timed as either). A speedup, or a slowdown, is judged in the run that timed both
    models interleaved."""
    metrics, original, budget, notes = final_eval.metrics, base.original, base.budget, []
    if not evaluator.measured:
        return Measured(None, metrics, original, budget, None, slower_notes(original.metrics, metrics))
    with timer.stage("measure"):
        log.info("measuring the final model on %s ...", plan.profile.name)
        final = deployed_file(onnx, engine_file, evaluator)
        if evaluator.reference_onnx is not None:
            stats, reference = evaluator.measure_paired(final)
        else:
            stats, reference = measure_onnx(evaluator, final), None
    metrics = Metrics(stats.median_ms, measured_kind(stats), metrics.memory_mb, metrics.macs, metrics.params)
    if reference is not None:
        original, budget, note = _rebased(base, reference, plan.spec)
        notes.append(note)
    notes += slower_notes(original.metrics, metrics)
    measured_on = str(evaluator.device.address) if evaluator.device is not None else None
    return Measured(stats, metrics, original, budget, measured_on, tuple(notes))


def deployed_file(onnx: Path, engine_file: Path | None, evaluator: LatencyEvaluator) -> Path:
    """What the verdict times: the file the user deploys (the build pass's `engine_file`: model.onnx, or
    model.int8.onnx for an INT8 profile), model.onnx on a device that builds its own engine from it."""
    return onnx if evaluator.device is not None or engine_file is None else engine_file


def slower_notes(original: Metrics, final: Metrics) -> tuple[str, ...]:
    """A note when the final model's latency (measured or predicted) is worse than the original's, whatever the
    budget: a budget of MACs or parameters can be met by a model that runs slower."""
    if not (original.latency_ms and final.latency_ms) or final.latency_ms <= original.latency_ms:
        return ()
    kind = units.latency_kind(final.latency_kind)
    note = (f"SLOWER: the final model's {kind} latency {units.ms(final.latency_ms)} is "
            f"{final.latency_ms / original.latency_ms:.2f}x the original's {units.ms(original.latency_ms)}")
    log.warning(note)
    return (note,)


def measure_onnx(evaluator: LatencyEvaluator, onnx: Path):
    """One ONNX model timed on the target with the profile's full run count (warm-up runs excluded)."""
    return evaluator.measure_onnx(onnx, full=True)


def _rebased(base: Baseline, ref, spec: BudgetSpec) -> tuple[Evaluation, Budget, str]:
    """The original as timed interleaved with the final model, and the relative latency budget resolved from it."""
    first = base.original.metrics
    metrics = Metrics(ref.median_ms, measured_kind(ref), first.memory_mb, first.macs, first.params)
    if spec.latency_fraction is None:
        note = (f"the original and the final model were timed interleaved: original {ref.median_ms:.4g} ms there "
                f"(first measured alone at {first.latency_ms:.4g} ms)")
        log.info(note)
        return Evaluation(metrics, ref, base.original.layers), base.budget, note
    rebased = resolve_budget(spec, metrics)
    asked = f"--speedup {spec.speedup:g}" if spec.speedup else f"--latency-ms {100 * spec.latency_fraction:g}%"
    note = (f"{asked} was judged in one run that timed the original and the final model "
            f"interleaved: original {ref.median_ms:.4g} ms there (first measured alone at "
            f"{first.latency_ms:.4g} ms; the budget was {base.budget.latency_ms:.4g} ms from that, "
            f"{rebased.latency_ms:.4g} ms from this)")
    log.info(note)
    return Evaluation(metrics, ref, base.original.layers), rebased, note


def fmt_metrics(m: Metrics) -> str:
    macs = f"{units.count(m.macs)} MACs, " if m.macs is not None else ""
    return (f"{units.ms(m.latency_ms)} ({units.latency_kind(m.latency_kind)}), {macs}{units.count(m.params)} params, "
            f"{units.mb(m.memory_mb)}")
