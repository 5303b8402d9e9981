"""The prune pass: channels removed until the model meets the budget (compress/search.py), BatchNorm statistics
re-estimated on the calibration data (the rounds: compress/search/). A model that meets the budget already is returned as it is."""
from __future__ import annotations

import copy
import dataclasses
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from ..bn_recalibration import recalibrate_batchnorm
from ..calib import CalibData
from ..config import CompressConfig
from ..criteria.registry import describe_criterion, make_criterion
from ..errors import BudgetError, InputError
from ..evaluate import Evaluation, LatencyEvaluator
from ..pruning.pruner import ChannelPruner
from ..pruning.view import GroupView
from ..search.guard import AccuracyGuard, check_held_out, held_out_split
from ..search.removal import prune_to
from ..search.rounds import SearchSetup, SearchState, full_evaluation, knapsack_search, uniform_search
from .load import Loaded, Plan
from .measure import Baseline, fmt_metrics
from .timing import Timer

log = logging.getLogger("compress")

# Accept a measured round only 2 % under budget: the final re-measurement is noisy too (a paired confirmation is
# within +-1 % at 95 % confidence on host). 3 % made a pretrained ResNet-56 at a confirmed 1.54x prune again.
LATENCY_MARGIN = 0.98


@dataclass(frozen=True)
class Pruned:
    model: nn.Module               # the pruned copy (the loaded module itself when nothing was pruned)
    evaluation: Evaluation         # of the model as the search left it
    pruned: bool
    record: dict = field(repr=False)               # the report's `pruning` section
    details: dict | None = field(default=None, repr=False)   # the criterion's per-layer scores (scores.json)
    notes: tuple[str, ...] = ()
    guard: AccuracyGuard | None = field(default=None, repr=False)   # the accuracy limit, when one was set
    accuracy_binding: str | None = None   # why the accuracy limit stopped the search short of the budget


def accuracy_guard(config: CompressConfig, loaded: Loaded) -> tuple[AccuracyGuard | None, CalibData]:
    """The accuracy limit on the held-out calibration samples, and the samples the search may use (all of them
    without a limit)."""
    limit, calib = config.budget.accuracy_limit, loaded.calib
    if limit is None or calib.synthetic:
        return None, calib
    check_held_out(len(calib), limit[0])
    fit, held = held_out_split(len(calib))
    labels = calib.y[held] if calib.y is not None and calib.labels_from == "data" else None
    guard = AccuracyGuard(limit[0], limit[1], loaded.model.module, calib.x[held], labels, loaded.task)
    y = calib.y[fit] if calib.y is not None else None
    log.info("accuracy limit %s %g measured on %d held-out calibration samples; the search uses the other %d",
             limit[0], limit[1], len(held), len(fit))
    return guard, dataclasses.replace(calib, x=calib.x[fit], y=y)


def prune(config: CompressConfig, plan: Plan, loaded: Loaded, evaluator: LatencyEvaluator, base: Baseline,
          timer: Timer) -> Pruned:
    record: dict = {"criterion": plan.criterion_name, "criterion_description": describe_criterion(plan.criterion_name),
                    "criterion_options": dict(config.prune.criterion_options), "rounds": [], "groups": []}
    budget, original = base.budget, base.original
    guard, calib = accuracy_guard(config, loaded)
    if not budget.misses(original.metrics):
        log.info("the original model already meets the budget; nothing to prune")
        note = ("the original model already meets the budget: nothing was pruned"
                + (" (and nothing recovered from --train-data)" if config.recover.train_data else ""))
        return Pruned(loaded.model.module, original, False, record, None, (note,), guard)
    if not loaded.model.prunable:
        raise InputError(f"{loaded.model.path} is TorchScript, which cannot be pruned structurally and misses the "
                         f"budget ({'; '.join(budget.misses(original.metrics))}); pass the state dict with --arch")
    notes = []
    with timer.stage("prune"):
        model = copy.deepcopy(loaded.model.module)
        with _flat_outputs(model, loaded.example):
            final, record = _search(config, plan, loaded, calib, guard, model, evaluator, base, record, timer)
        pruned = final.pruner.model
        pruned.__class__ = type(model)   # a model the accuracy limit returned to is a copy made inside the view
    details = plan.criterion.details() or None
    if details:  # what drove the choices: per-layer scores, CMI curves and cutoffs
        record["criterion_details"] = details
    untouched = final.evaluation.metrics.params == original.metrics.params   # the limit undid every round
    if untouched:
        notes.append("the accuracy limit undid every round: the model is the original, BatchNorm statistics as "
                     "they were")
    elif not calib.synthetic:
        with timer.stage("recalibrate_bn"):
            log.info("re-estimating BatchNorm statistics on %d calibration samples ...", len(calib))
            record["bn_recalibrated_layers"] = recalibrate_batchnorm(pruned, calib.x)
    else:
        notes.append("BatchNorm statistics were not re-estimated: no calibration data (--calib) given")
    if final.accuracy_binding:
        notes.append(final.accuracy_binding)
    return Pruned(pruned, final.evaluation, True, record, details, tuple(notes), guard, final.accuracy_binding)


def _search(config: CompressConfig, plan: Plan, loaded: Loaded, calib: CalibData, guard: AccuracyGuard | None, model,
            evaluator: LatencyEvaluator, base: Baseline, record: dict, timer: Timer) -> tuple[SearchState, dict]:
    c, profile, budget = config.prune, plan.profile, base.budget
    pruner = ChannelPruner(model, loaded.example, profile.pruning.channel_multiple, profile.pruning.min_channels)
    record = {**record, "groups": [g.to_dict() for g in pruner.groups.values()]}
    if not pruner.prunable_groups:
        raise BudgetError(f"no layer of this model can be pruned safely, and the original misses the budget "
                          f"({'; '.join(budget.misses(base.original.metrics))}); best reachable: "
                          f"{fmt_metrics(base.original.metrics)}")
    for g in pruner.groups.values():
        if not g.prunable:
            log.info("left unpruned: %s (%s)", g.root, g.reason)
    margin = LATENCY_MARGIN if evaluator.measured else 1.0
    _check_reachable(c.selection, pruner, model, evaluator, budget, plan, margin)

    def prepare(view: GroupView) -> None:
        with timer.stage("score"):
            _prepare_criterion(plan.criterion, view, calib, config.output.progress)

    def after_round(current) -> None:
        if not calib.synthetic:   # every comparison after a round sees re-estimated statistics
            with timer.stage("recalibrate_bn"):
                recalibrate_batchnorm(current, calib.x)

    progress = _progress(None if c.selection == "knapsack" else int(np.ceil(1.0 / c.step)), config.output.progress)
    fraction = plan.spec.latency_fraction
    setup = SearchSetup(plan.criterion, evaluator, margin, prepare, after_round, progress, record["rounds"],
                        latency_fraction=fraction if evaluator.reference_onnx is not None else None, guard=guard,
                        samples=None if calib.synthetic else calib.x)
    start = SearchState(pruner, budget, base.original)
    try:
        final = knapsack_search(setup, start) if c.selection == "knapsack" else uniform_search(setup, start, c.step)
    finally:
        progress.close()
    return final, {**record, "selection": c.selection,
                              "groups_after": [g.to_dict() for g in final.pruner.groups.values()],
                              "blocks_removed": list(getattr(final.pruner, "removed_blocks", []))}


def _check_reachable(selection: str, pruner: ChannelPruner, model, evaluator: LatencyEvaluator, budget, plan: Plan,
                     margin: float) -> None:
    """The most that can be pruned: if even that misses, say so now instead of after every round."""
    floor_model = copy.deepcopy(model)
    # Which channels survive does not change the floor's shapes: any criterion will do, and L1 needs no data.
    floor_pruner = pruner.for_copy(floor_model)
    prune_to(floor_pruner, make_criterion("l1"), 0.0)
    if selection == "knapsack":   # the knapsack can also remove whole residual blocks at their minimum
        floor_pruner.without_blocks(list(floor_pruner.depth_blocks()))
    floor_eval, floor_budget = full_evaluation(evaluator, floor_model, budget, plan.spec.latency_fraction)
    if floor_budget.misses(floor_eval.metrics, margin):
        misses = "; ".join(floor_budget.misses(floor_eval.metrics, margin))
        raise BudgetError(f"budget unreachable: even with every prunable layer at the minimum of "
                          f"{plan.profile.pruning.min_channels} channels"
                          f"{' and every removable residual block removed' if selection == 'knapsack' else ''}"
                          f" the model misses it ({misses}); best reachable: "
                          f"{fmt_metrics(floor_eval.metrics)}; relax the budget", best=floor_eval.metrics.to_dict())


def _prepare_criterion(crit, view: GroupView, calib: CalibData, show_progress: bool) -> None:
    if crit.needs_data and calib.synthetic:
        raise InputError(f"criterion {crit.name!r} scores channels from data and needs calibration data; "
                         "pass --calib (images, .npz/.npy) or choose a data-free criterion such as l1")
    bar = None

    def progress(stage: str, done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, desc=f"scoring ({stage})", leave=False, disable=None if show_progress else True)
        bar.n = done
        bar.refresh()

    crit.progress = progress
    # class labels per sample only: per-pixel labels are for the accuracy (see load._check_criterion_labels)
    y = calib.y if calib.y is not None and calib.y.dim() == 1 else None
    try:
        crit.prepare(view, None if calib.synthetic else calib.x, None if calib.synthetic else y)
    finally:
        if bar is not None:
            bar.close()


def _progress(total: int | None, enabled: bool):
    """Uniform selection: its rounds are counted. Knapsack: a share of the way to the budget (total None)."""
    from tqdm.auto import tqdm
    if total is None:
        return tqdm(total=100, desc="pruning", bar_format="{desc}: {n}% of the way to the budget |{bar}| "
                    "{elapsed}{postfix}", disable=None if enabled else True, leave=False)
    return tqdm(total=total, desc="pruning rounds", unit="round", disable=None if enabled else True, leave=False)


@contextmanager
def _flat_outputs(model: nn.Module, example: torch.Tensor):
    """The pruner (compress/pruning.py) reads a tensor or a flat tuple/list of tensors; a model that returns a dict
    or nested structures is pruned through a view that returns its tensors as a flat tuple (in the ONNX output
    order), and gets its own forward back afterwards. Module names, and so every report row, stay the same."""
    with torch.no_grad():
        out = model(example)
    if isinstance(out, torch.Tensor) or (isinstance(out, (tuple, list)) and
                                         all(isinstance(t, torch.Tensor) for t in out)):
        yield
        return
    cls = type(model)

    def forward(self, *args, **kwargs):
        return tuple(_leaves(cls.forward(self, *args, **kwargs)))

    model.__class__ = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__,
                                                  "__qualname__": cls.__qualname__})
    try:
        yield
    finally:
        model.__class__ = cls


def _leaves(obj):
    """The tensors of an output structure in export.flatten_outputs' order; anything else is a leaf too, so that
    tracers (torch.fx proxies) pass through."""
    if isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _leaves(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _leaves(item)
    else:
        yield obj
