"""The pruning rounds that bring a model to its budget: knapsack (default) or uniform selection.

Knapsack rounds (compress/selection.py) remove, per round, the least important channels per unit of the
resource that most exceeds its budget, priced by the target's cost model, and then evaluate the real
model: measured where the target can be measured (host), predicted elsewhere. The closed loop works in
relative terms: a round asks the cost model for the share of the resource that the last evaluation
says is still too much, so a cost model that is off by a constant factor is corrected by each
measurement (the ratio measured / predicted is recorded per round). Rounds aim a little under the
budget (AIM) and shrink as they get close, so the result lands at 90-100 % of it rather than far below.
Each round is capped (MAX_ROUND_SHARE) so scores can be recomputed as the network shrinks.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from .report import units
from .budget import Budget
from .cost_model import predict_latency_ms
from .errors import BudgetError
from .evaluate import Evaluation, Evaluator
from .pruning import ChannelPruner
from .selection import ResourceModel, plan_round

log = logging.getLogger("compress")

SELECTIONS = ("knapsack", "uniform")
MAX_ROUND_SHARE = 0.15   # at most this share of the binding resource per round
MAX_ROUNDS = 80
AIM = {True: 0.93, False: 0.98}   # target share of the budget, measured vs predicted latency


@dataclass
class SearchContext:
    pruner: ChannelPruner
    evaluator: Evaluator
    budget: Budget
    margin: float                              # a measured latency must be under budget * margin
    prepare: Callable[[], None]                # scores for the round (criterion.prepare with calibration data)
    # What forward passes over the pruned model need after a round (BatchNorm re-estimation on the
    # calibration data). Run before the next forward pass that reads the model's values: a measured
    # evaluation, or a criterion that scores the current model again before a round. A predicted
    # evaluation only counts shapes, so with a criterion that scored once it is left to the caller, who
    # re-estimates the final model: its statistics do not depend on earlier estimates, only on its
    # weights and the data, so the result is the same and each round saves a pass over the data.
    after_round: Callable[[], None]
    progress: object                           # a tqdm-like bar
    rounds: list
    latency_fraction: float | None = None      # a relative latency budget, confirmed against the original
    stale: bool = False                        # channels went since after_round last ran

    def refresh(self, before: str) -> bool:
        """Run after_round if the model changed since it last ran and what comes next (`before`:
        "evaluate" or "prepare") reads the model's values; whether it ran."""
        if not self.stale:
            return False
        if before == "evaluate" and not self.evaluator.measured:
            return False
        if before == "prepare" and not _criterion_reads_model(self.pruner):
            return False
        self.after_round()
        self.stale = False
        return True


def _criterion_reads_model(pruner) -> bool:
    criterion = getattr(pruner, "criterion", None)
    reads = getattr(criterion, "prepare_reads_model", None)
    return True if reads is None else bool(reads())


def full_evaluation(evaluator: Evaluator, model, budget: Budget,
                    latency_fraction: float | None) -> tuple[Evaluation, Budget]:
    """A model's evaluation with the full run count, and the budget to judge it by.

    A relative latency budget (a speedup) is a ratio, so it is judged as one: the model is timed
    interleaved with the original and the latency budget is re-resolved from the original's time in
    that same run, which the machine's drift from second to second cannot fake.
    """
    if latency_fraction is not None and evaluator.reference_onnx is not None:
        ev = evaluator.evaluate_paired(model)
        return ev, replace(budget, latency_ms=ev.reference.median_ms * latency_fraction)
    return evaluator.evaluate(model, full=True), budget


def confirm(ctx: SearchContext, ev: Evaluation) -> tuple[Evaluation, list[str]]:
    """Re-measure a round that seems to meet the budget (full_evaluation); the budget it misses."""
    ev, ctx.budget = full_evaluation(ctx.evaluator, ctx.pruner.model, ctx.budget, ctx.latency_fraction)
    return ev, ctx.budget.misses(ev.metrics, ctx.margin)


def binding(budget: Budget, ev: Evaluation, margin: float, measured: bool) -> tuple[str, float] | None:
    """The budget dimension furthest over its limit and the share of it still to remove (None: all met)."""
    m = ev.metrics
    worst = None
    for name, limit, value, accept in (("latency_ms", budget.latency_ms, m.latency_ms, margin),
                                       ("macs", budget.macs, m.macs, 1.0), ("params", budget.params, m.params, 1.0),
                                       ("memory_mb", budget.memory_mb, m.memory_mb, 1.0)):
        if limit is None or value is None or value <= limit * accept:
            continue
        aim = AIM[measured] if name == "latency_ms" else 0.999
        share = 1.0 - limit * aim / value
        if worst is None or share > worst[1]:
            worst = (name, share)
    return worst


def knapsack_search(ctx: SearchContext, start: Evaluation) -> Evaluation:
    pruner, evaluator = ctx.pruner, ctx.evaluator
    def block_of(info) -> int:
        step = pruner.step_of(info)
        return info.channels % step or step   # first realign a count that is off the multiple

    floor_of = pruner.floor_of

    ev = start
    status = _Status(ctx.progress, ctx.budget, start)
    for k in range(1, MAX_ROUNDS + 1):
        need = binding(ctx.budget, ev, ctx.margin, evaluator.measured)
        if need is None:
            return ev
        resource, share = need
        priced = resource
        if resource == "latency_ms" and not evaluator.factors.usable:
            priced = "macs"   # no latency model for this target yet: MACs stand in, the measurement decides
        if ctx.stale and _criterion_reads_model(pruner):
            status(k, "re-estimating BatchNorm")
            ctx.refresh("prepare")
        status(k, "scoring channels")
        ctx.prepare()
        rm = ResourceModel(pruner, ev.layers, evaluator.factors, ev.metrics.params)
        now = rm.value(priced)
        plan = plan_round(pruner, rm, priced, now * min(share, MAX_ROUND_SHARE), block_of, floor_of,
                          pruner.depth_blocks())
        if not plan.remove and not plan.blocks:
            break
        predicted_before = rm.value("latency_ms") if evaluator.factors.usable else None
        status(k, "removing channels")
        removed = pruner.prune_counts(plan.remove)
        if plan.blocks:
            pruner = ctx.pruner = pruner.without_blocks(plan.blocks)
            floor_of = pruner.floor_of
        ctx.stale = True
        if evaluator.measured:
            status(k, "re-estimating BatchNorm")
            ctx.refresh("evaluate")
        status(k, "measuring" if evaluator.measured else "predicting latency")
        ev = evaluator.evaluate(pruner.model)
        met = not ctx.budget.misses(ev.metrics, ctx.margin)
        if met and evaluator.measured:
            status(k, "confirming with a full measurement")
            ev, misses = confirm(ctx, ev)
            met = not misses
        predicted_after = predict_latency_ms(ev.layers, evaluator.factors) if evaluator.factors.usable else None
        ctx.rounds.append({
            "selection": "knapsack", "binding": resource, "priced_by": priced, "share_asked": round(share, 4),
            "channels_removed": removed, "removed_per_group": plan.remove, "blocks_removed": plan.blocks,
            "priced_saving": plan.saving, "importance_removed": round(plan.value, 4),
            "predicted_latency_ms": predicted_after,
            "measured_over_predicted": (ev.metrics.latency_ms / predicted_after
                                        if evaluator.measured and predicted_after else None),
            "predicted_latency_before_ms": predicted_before,
            "metrics": ev.metrics.to_dict(), "meets_budget": met, **_paired(ev)})
        status.done(k, ev)
        log.info("round %d (%s): -%d channels%s, %s%s", k, resource, removed,
                 f", -{len(plan.blocks)} blocks ({', '.join(plan.blocks)})" if plan.blocks else "", _fmt(ev),
                 "  (budget met)" if met else "")
        if met:
            return ev
    raise _unreachable(ctx)


def uniform_search(ctx: SearchContext, step: float) -> Evaluation:
    pruner, evaluator = ctx.pruner, ctx.evaluator
    for k in range(1, int(np.ceil(1.0 / step)) + 1):
        keep = max(0.0, 1.0 - k * step)
        ctx.refresh("prepare")
        ctx.prepare()
        removed = pruner.prune_to(keep)
        ctx.progress.update(1)
        if removed == 0 and not pruner.at_minimum():
            continue  # rounding to the channel multiple left every group as it was
        ctx.stale = True
        ctx.refresh("evaluate")
        ev = evaluator.evaluate(pruner.model)
        misses = ctx.budget.misses(ev.metrics, ctx.margin)
        if not misses and evaluator.measured:
            ev, misses = confirm(ctx, ev)
        ctx.rounds.append({"selection": "uniform", "keep_fraction": round(keep, 4), "channels_removed": removed,
                           "metrics": ev.metrics.to_dict(), "meets_budget": not misses, **_paired(ev)})
        ctx.progress.set_postfix_str(f"{ev.metrics.latency_ms:.3g} ms")
        log.info("round %d: keep %.2f, %s%s", k, keep, _fmt(ev), "" if misses else "  (budget met)")
        if not misses:
            return ev
        if pruner.at_minimum():
            break
    raise _unreachable(ctx)


class _Status:
    """The knapsack's bar: how far the model has come from the original to the budget (the number of rounds
    is not known in advance, so the bar does not pretend to count them), and what the round is doing now."""

    def __init__(self, bar, budget: Budget, start: Evaluation):
        self.bar, self.budget, self.start = bar, budget, start.metrics
        self.last = ""

    def __call__(self, k: int, what: str) -> None:
        self.bar.set_postfix_str(f"round {k}: {what}{self.last}", refresh=True)

    def done(self, k: int, ev: Evaluation) -> None:
        m, s, b = ev.metrics, self.start, self.budget
        shares = []
        for limit, first, now in ((b.latency_ms, s.latency_ms, m.latency_ms), (b.macs, s.macs, m.macs),
                                  (b.params, s.params, m.params), (b.memory_mb, s.memory_mb, m.memory_mb)):
            if limit is not None and first is not None and now is not None and first > limit:
                shares.append(min(1.0, max(0.0, (first - now) / (first - limit))))
        self.bar.n = int(100 * min(shares)) if shares else self.bar.n
        self.last = f"; {units.ms(m.latency_ms)}, {units.count(m.macs)} MACs"
        self(k, "done")


def _paired(ev: Evaluation) -> dict:
    if ev.reference is None:
        return {}
    return {"original_latency_ms_interleaved": ev.reference.median_ms,
            "speedup_measured": ev.reference.median_ms / ev.metrics.latency_ms}


def _unreachable(ctx: SearchContext) -> BudgetError:
    if not ctx.rounds:
        return BudgetError("no channel could be removed; relax the budget")
    best = min((r["metrics"] for r in ctx.rounds), key=lambda m: m["latency_ms"])
    return BudgetError(f"budget not met after pruning every layer as far as it goes; best reachable: latency "
                       f"{units.ms(best['latency_ms'])}, {units.count(best['macs'])} MACs, "
                       f"{units.count(best['params'])} params; relax the budget", best=best)


def _fmt(ev: Evaluation) -> str:
    m = ev.metrics
    return (f"{units.ms(m.latency_ms)} ({units.latency_kind(m.latency_kind)}), {units.count(m.macs)} MACs, "
            f"{units.count(m.params)} params")
