"""The pruning rounds that bring a model to its budget: knapsack (default) or uniform selection.

Knapsack rounds (compress/search/knapsack.py) remove, per round, the least important channels per unit of the
resource that most exceeds its budget, priced by the target's cost model, and then evaluate the real
model: measured where the target can be measured (host), predicted elsewhere. The closed loop works in
relative terms: a round asks the cost model for the share of the resource that the last evaluation
says is still too much, so a cost model that is off by a constant factor is corrected by each
measurement (the ratio measured / predicted is recorded per round). Rounds aim a little under the
budget (AIM, nearer it in the last rounds) and shrink as they get close, so the result lands at 90-100 % of it
rather than far below; a measured round that lands far under it (OVERSHOOT) is undone and redone at half its size.
Each round is capped (MAX_ROUND_SHARE) so scores can be recomputed as the network shrinks.

With an accuracy limit (search/guard.py), each round's model is checked against it before its latency is
evaluated: a round that breaks it is undone and tried again at half the size, down to MIN_GUARD_SHARE; then
the search stops at the last model within the limit, which may miss the budget (the accuracy limit binds).
"""
from __future__ import annotations

import logging
import copy
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..report import units
from ..costmodel.model import predict_latency_ms
from ..criteria.base import Criterion
from ..errors import BudgetError
from ..evaluate import Evaluation, LatencyEvaluator
from ..pruning.pruner import ChannelPruner
from ..pruning.view import GroupView
from .budget import Budget
from .knapsack import ResourceModel, plan_round
from .removal import prune_lowest, prune_to
from .stream_value import stream_weights, streams

log = logging.getLogger("compress")

SELECTIONS = ("knapsack", "uniform")
MAX_ROUND_SHARE = 0.15   # at most this share of the binding resource per round
MIN_GUARD_SHARE = 0.01   # a round undone by the accuracy limit is halved down to this share, then the search stops
MAX_ROUNDS = 80
AIM = {True: 0.93, False: 0.98}   # target share of the budget, measured vs predicted latency
# A measured round that lands under this share of the latency budget is undone and redone at half its size, at most
# MAX_REDOS times: past the budget every point of speed costs accuracy (a pretrained ResNet-56 at a measured 1.51x kept
# 67.4 % top-1, at 1.64x 63.3 %), and one round's overshoot (a whole residual block as its last pick, a fast spell of
# the machine) is larger than the search's aim.
OVERSHOOT = 0.93
MAX_REDOS = 2
# Within NEAR of a measured latency budget the prediction errors that AIM covers are small (the last measurement is
# the starting point), so the round aims just under the acceptance margin instead.
NEAR = 1.10
FINAL_AIM_GAP = 0.02


@dataclass(frozen=True)
class SearchSetup:
    """What every round of a search shares; nothing in it changes while the search runs."""

    criterion: Criterion
    evaluator: LatencyEvaluator
    margin: float                              # a measured latency must be under budget * margin
    prepare: Callable[[GroupView], None]       # scores for the round (criterion.prepare with calibration data)
    # What forward passes over the pruned model need after a round (BatchNorm re-estimation on the
    # calibration data). Run before the next forward pass that reads the model's values: a measured
    # evaluation, or a criterion that scores the current model again before a round. A predicted
    # evaluation only counts shapes, so with a criterion that scored once it is left to the caller, who
    # re-estimates the final model: its statistics do not depend on earlier estimates, only on its
    # weights and the data, so the result is the same and each round saves a pass over the data.
    after_round: Callable[[object], None]      # called with the current model
    progress: object                           # a tqdm-like bar
    rounds: list                               # each round's record is appended here (report.json)
    latency_fraction: float | None = None      # a relative latency budget, confirmed against the original
    guard: object | None = None                # an AccuracyGuard (search/guard.py): the accuracy limit, if any
    samples: object | None = None              # calibration inputs the residual streams are valued on (None: none)


@dataclass(frozen=True)
class SearchState:
    """Where the search stands after a round: the pruner of the current model (a new one once residual
    blocks go), the budget it is judged by (a paired measurement re-resolves a relative one), the last
    evaluation, and whether channels went since `after_round` last ran."""

    pruner: ChannelPruner
    budget: Budget
    evaluation: Evaluation
    stale: bool = False
    accuracy_binding: str | None = None   # why the accuracy limit stopped the search short of the budget


def snapshot(state: SearchState) -> SearchState:
    """A copy of the state's model and pruner, to return to when a round breaks the accuracy limit."""
    model = copy.deepcopy(state.pruner.model)
    pruner = state.pruner.for_copy(model)
    if hasattr(state.pruner, "removed_blocks"):
        pruner.removed_blocks = list(state.pruner.removed_blocks)
    return replace(state, pruner=pruner)


def refreshed(setup: SearchSetup, state: SearchState, before: str) -> SearchState:
    """The state after running after_round if the model changed since it last ran and what comes next
    (`before`: "evaluate", "prepare" or "accuracy") reads the model's values."""
    if not state.stale:
        return state
    if before == "evaluate" and not setup.evaluator.measured:
        return state
    if before == "prepare" and not setup.criterion.prepare_reads_model():
        return state
    setup.after_round(state.pruner.model)
    return replace(state, stale=False)


def guarded(setup: SearchSetup, state: SearchState, record: dict):
    """The accuracy limit checked on the state's model (BatchNorm re-estimated first, as the final model is):
    (state, None) when it holds or no limit is set, (state, check) when it is broken. The round's record gets
    the measured value."""
    if setup.guard is None:
        return state, None
    state = refreshed(setup, state, "accuracy")
    check = setup.guard.check(state.pruner.model)
    record["accuracy_guard"] = {"value": check.value, "within_limit": check.ok}
    return state, (None if check.ok else check)


def stopped_by_accuracy(setup: SearchSetup, state: SearchState, check) -> SearchState:
    why = (f"accuracy limit binding: the next round broke it ({setup.guard.describe(check.value)}), so the search "
           "stopped at the last model within it")
    log.info(why)
    return replace(state, accuracy_binding=why)


def full_evaluation(evaluator: LatencyEvaluator, model, budget: Budget,
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


def confirm(setup: SearchSetup, state: SearchState) -> tuple[SearchState, list[str]]:
    """Re-measure a round that seems to meet the budget (full_evaluation): the state with that evaluation
    and the budget it was judged by, and what it misses."""
    ev, budget = full_evaluation(setup.evaluator, state.pruner.model, state.budget, setup.latency_fraction)
    return replace(state, evaluation=ev, budget=budget), budget.misses(ev.metrics, setup.margin)


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
        if name == "latency_ms" and measured and value <= limit * NEAR:
            aim = max(aim, accept - FINAL_AIM_GAP)
        share = 1.0 - limit * aim / value
        if worst is None or share > worst[1]:
            worst = (name, share)
    return worst


def knapsack_search(setup: SearchSetup, start: SearchState) -> SearchState:
    """Knapsack rounds from `start` until the budget is met; the final state (BudgetError if unreachable)."""
    evaluator, criterion = setup.evaluator, setup.criterion
    state = start
    status = _Status(setup.progress, start.budget, start.evaluation)
    cap, broken = MAX_ROUND_SHARE, None     # the round's cap, halved each time a round is undone (accuracy, overshoot)
    redos = 0                               # rounds undone for landing far under a measured latency budget
    for k in range(1, MAX_ROUNDS + 1):
        pruner = state.pruner
        need = binding(state.budget, state.evaluation, setup.margin, evaluator.measured)
        if need is None:
            return state
        resource, share = need
        priced = resource
        if resource == "latency_ms" and not evaluator.factors.usable:
            priced = "macs"   # no latency model for this target yet: MACs stand in, the measurement decides
        if state.stale and criterion.prepare_reads_model():
            status(k, "re-estimating BatchNorm")
            state = refreshed(setup, state, "prepare")
        status(k, "scoring channels")
        setup.prepare(pruner.view)
        status(k, "valuing residual streams")
        weights = _stream_weights(setup, pruner, warn=k == 1)   # again each round: a thinner stream loses more
        rm = ResourceModel(pruner.view, state.evaluation.layers, evaluator.factors, state.evaluation.metrics.params)
        now = rm.value(priced)
        plan = plan_round(pruner.view, criterion, rm, priced, now * min(share, cap),
                          lambda info: _first_block(pruner, info), pruner.floor_of, pruner.depth_blocks(),
                          weights=weights)
        if not plan.remove and not plan.blocks:
            if broken is not None:
                return stopped_by_accuracy(setup, state, broken)
            break
        kept = snapshot(state) if setup.guard is not None or evaluator.measured else None
        predicted_before = rm.value("latency_ms") if evaluator.factors.usable else None
        status(k, "removing channels")
        removed = prune_lowest(pruner, criterion, plan.remove)
        if plan.blocks:
            pruner = pruner.without_blocks(plan.blocks)
        state = replace(state, pruner=pruner, stale=True)
        moved = {"selection": "knapsack", "binding": resource, "priced_by": priced, "share_asked": round(share, 4),
                 "channels_removed": removed, "removed_per_group": plan.remove, "blocks_removed": plan.blocks}
        record: dict = {}
        status(k, "checking the accuracy limit")
        state, broken_now = guarded(setup, state, record)
        if broken_now is not None:
            broken, cap = broken_now, cap / 2
            setup.rounds.append({**moved, "metrics": state.evaluation.metrics.to_dict(), "meets_budget": False,
                                 "undone": True, **record})
            log.info("round %d undone: %s", k, setup.guard.describe(broken_now.value))
            state = kept
            if cap < MIN_GUARD_SHARE:
                return stopped_by_accuracy(setup, state, broken)
            continue
        if evaluator.measured:
            status(k, "re-estimating BatchNorm")
            state = refreshed(setup, state, "evaluate")
        status(k, "measuring" if evaluator.measured else "predicting latency")
        state = replace(state, evaluation=evaluator.evaluate(pruner.model))
        met = not state.budget.misses(state.evaluation.metrics, setup.margin)
        if met and evaluator.measured:
            status(k, "confirming with a full measurement")
            state, misses = confirm(setup, state)
            met = not misses
        ev = state.evaluation
        if (met and resource == "latency_ms" and redos < MAX_REDOS and _far_under(state, evaluator.measured)
                and _steps(pruner, plan) > 1):   # a round of one step cannot be halved
            redos, cap = redos + 1, min(cap, share) / 2
            setup.rounds.append({**moved, "metrics": ev.metrics.to_dict(), "meets_budget": True, "undone": True,
                                 "undone_why": f"landed under {OVERSHOOT:.0%} of the latency budget", **_paired(ev),
                                 **record})
            log.info("round %d undone: %s is under %d %% of the budget %s; trying it at half the size", k,
                     units.ms(ev.metrics.latency_ms), round(100 * OVERSHOOT), units.ms(state.budget.latency_ms))
            state = kept
            continue
        predicted_after = predict_latency_ms(ev.layers, evaluator.factors) if evaluator.factors.usable else None
        setup.rounds.append({
            **moved, "priced_saving": plan.saving, "importance_removed": round(plan.value, 4),
            "predicted_latency_ms": predicted_after,
            "measured_over_predicted": (ev.metrics.latency_ms / predicted_after
                                        if evaluator.measured and predicted_after else None),
            "predicted_latency_before_ms": predicted_before,
            "metrics": ev.metrics.to_dict(), "meets_budget": met, **_paired(ev), **record})
        status.done(k, ev)
        log.info("round %d (%s): -%d channels%s, %s%s", k, resource, removed,
                 f", -{len(plan.blocks)} blocks ({', '.join(plan.blocks)})" if plan.blocks else "", _fmt(ev),
                 "  (budget met)" if met else "")
        if met:
            return state
    if broken is not None:
        return stopped_by_accuracy(setup, state, broken)
    raise _unreachable(setup)


def _steps(pruner: ChannelPruner, plan) -> int:
    """How many of the smallest moves (a channel multiple of one group, or one block) a round made."""
    groups = pruner.view.groups
    return len(plan.blocks) + sum(max(1, n // pruner.step_of(groups[r])) for r, n in plan.remove.items() if r in groups)


def _far_under(state: SearchState, measured: bool) -> bool:
    """Whether a measured round met the latency budget with far more than it needed (OVERSHOOT)."""
    limit, value = state.budget.latency_ms, state.evaluation.metrics.latency_ms
    return measured and limit is not None and value is not None and value < limit * OVERSHOOT


def _stream_weights(setup: SearchSetup, pruner: ChannelPruner, warn: bool) -> dict[str, float]:
    """The residual streams' value factors for this round (search/stream_value.py)."""
    if setup.samples is None:
        if warn and streams(pruner):
            log.warning("no calibration data: residual streams are valued like one layer's channels and may be cut "
                        "too far; pass --calib to value them by what removing them does to the outputs")
        return {}
    return stream_weights(pruner, setup.criterion, setup.samples)


def _first_block(pruner: ChannelPruner, info) -> int:
    step = pruner.step_of(info)
    return info.channels % step or step   # first realign a count that is off the multiple


def uniform_search(setup: SearchSetup, start: SearchState, step: float) -> SearchState:
    """Uniform rounds (every group to the same keep fraction, or the criterion's own shares) from `start`
    until the budget is met; the final state (BudgetError if unreachable)."""
    evaluator, state = setup.evaluator, start
    pruner = state.pruner   # uniform rounds remove no blocks: one pruner throughout
    for k in range(1, int(np.ceil(1.0 / step)) + 1):
        keep = max(0.0, 1.0 - k * step)
        state = refreshed(setup, state, "prepare")
        setup.prepare(pruner.view)
        kept = snapshot(state) if setup.guard is not None else None
        removed = prune_to(pruner, setup.criterion, keep)
        setup.progress.update(1)
        if removed == 0 and not pruner.at_minimum():
            continue  # rounding to the channel multiple left every group as it was
        record: dict = {}
        state, broken = guarded(setup, replace(state, stale=True), record)
        if broken is not None:   # uniform rounds only grow: the last model within the limit is the best reachable
            setup.rounds.append({"selection": "uniform", "keep_fraction": round(keep, 4), "channels_removed": removed,
                                 "metrics": kept.evaluation.metrics.to_dict(), "meets_budget": False, "undone": True,
                                 **record})
            return stopped_by_accuracy(setup, kept, broken)
        state = refreshed(setup, state, "evaluate")
        state = replace(state, evaluation=evaluator.evaluate(pruner.model))
        misses = state.budget.misses(state.evaluation.metrics, setup.margin)
        if not misses and evaluator.measured:
            state, misses = confirm(setup, state)
        ev = state.evaluation
        setup.rounds.append({"selection": "uniform", "keep_fraction": round(keep, 4), "channels_removed": removed,
                             "metrics": ev.metrics.to_dict(), "meets_budget": not misses, **_paired(ev), **record})
        setup.progress.set_postfix_str(f"{ev.metrics.latency_ms:.3g} ms")
        log.info("round %d: keep %.2f, %s%s", k, keep, _fmt(ev), "" if misses else "  (budget met)")
        if not misses:
            return state
        if pruner.at_minimum():
            break
    raise _unreachable(setup)


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


def _unreachable(setup: SearchSetup) -> BudgetError:
    if not setup.rounds:
        return BudgetError("no channel could be removed; relax the budget")
    best = min((r["metrics"] for r in setup.rounds), key=lambda m: m["latency_ms"])
    return BudgetError(f"budget not met after pruning every layer as far as it goes; best reachable: latency "
                       f"{units.ms(best['latency_ms'])}, {units.count(best['macs'])} MACs, "
                       f"{units.count(best['params'])} params; relax the budget", best=best)


def _fmt(ev: Evaluation) -> str:
    m = ev.metrics
    return (f"{units.ms(m.latency_ms)} ({units.latency_kind(m.latency_kind)}), {units.count(m.macs)} MACs, "
            f"{units.count(m.params)} params")
