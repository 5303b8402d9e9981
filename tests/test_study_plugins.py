"""The study's criteria (benchmarks/study_plugins.py), registered through the public plugin interface:
the losing options allocation=kl and widths=l1 kept there, out of the product."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchmarks.study_plugins  # noqa: E402,F401 - registers the study's criteria
from edge_compress.compress.criteria.registry import criterion_names, make_criterion  # noqa: E402
from edge_compress.compress.search.removal import prune_lowest  # noqa: E402
from test_info_consumer_mi import _conv1_scores, _Net  # noqa: E402
from test_info_criteria import _data, coupled  # noqa: E402,F401 - the fixture


def test_the_study_registers_its_variants_through_the_plugin_interface():
    assert {"fisher", "combo", "consumer", "refit", "curve", "consumer-mi-study"} <= set(criterion_names())
    with pytest.raises(Exception, match="allocation"):
        make_criterion("consumer-mi", {"allocation": "kl"})   # not a product option


def _kl(p_logits, q_logits) -> float:
    lp, lq = torch.log_softmax(p_logits.double(), 1), torch.log_softmax(q_logits.double(), 1)
    return float((lp.exp() * (lp - lq)).sum(1).mean())


def test_kl_allocation_measures_what_pruning_the_weakest_channels_costs(coupled):
    """allocation=kl masks a group's weakest channels at its consumers: the output KL it records must be
    the KL of really pruning those channels (before BatchNorm re-estimation)."""
    model, base = coupled
    x, y = _data(model)
    crit = make_criterion("capacity-independence-study", {"allocation": "kl"})
    pruner = base.for_copy(copy.deepcopy(model))
    crit.prepare(pruner.view, x, y)
    scales, details = crit.group_weights(), crit.details()["allocation"]
    assert set(scales) == {g.root for g in pruner.prunable_groups if g.channels > pruner.floor_of(g)}
    conv1 = details["conv1"]
    assert conv1["channels"] == 2 and conv1["kl"] > 0   # a quarter of 8 channels
    m = copy.deepcopy(pruner.model)
    cut = pruner.for_copy(m)
    prune_lowest(cut, crit, {"conv1": conv1["channels"]})
    with torch.no_grad():
        assert _kl(model(x), m(x)) == pytest.approx(conv1["kl"], rel=1e-6)
    # The stream's channels reach conv5 after a concatenation (at an offset): not maskable, median scale.
    assert details["dw"]["why"].startswith("consumers cannot be masked") and scales["dw"] == 1.0
    # Its scale puts the group's channels on one scale with the others: KL per unit of normalised score.
    assert all(s > 0 for s in scales.values())
    assert make_criterion("capacity-independence").group_weights() is None


def test_kl_allocation_steers_the_knapsack_toward_the_group_that_costs_least_information(coupled):
    from edge_compress.compress.search.knapsack import ResourceModel, plan_round
    from edge_compress.compress.costmodel.model import layer_costs
    model, base = coupled
    x, y = _data(model)
    plans = {}
    for alloc in ("none", "kl"):
        crit = make_criterion("capacity-independence-study", {"allocation": alloc})
        pruner = base.for_copy(copy.deepcopy(model))
        crit.prepare(pruner.view, x, y)
        rm = ResourceModel(pruner.view, layer_costs(pruner.model, x[:1]), None, 0)
        plans[alloc] = plan_round(pruner.view, crit, rm, "macs", 0.5 * rm.value("macs"), lambda i: 1, pruner.floor_of)
        if alloc == "kl":
            scales = crit.group_weights()
    assert plans["kl"].remove != plans["none"].remove
    # The cheapest group per unit of information loses at least as many channels as without scales.
    cheapest = min((r for r in scales if r != "dw"), key=scales.get)
    assert plans["kl"].remove.get(cheapest, 0) >= plans["none"].remove.get(cheapest, 0)


def test_widths_l1_hands_the_knapsack_l1_values_in_the_information_order():
    """widths=l1: the knapsack sees the layer's L1 values (so it sizes layers as for l1), ordered as
    the information ranks the channels (so information picks which ones stay)."""
    from benchmarks.study_plugins import in_order_of
    order = torch.tensor([0.3, 0.1, 0.9, 0.5])
    values = torch.tensor([10.0, 40.0, 20.0, 30.0])
    assert in_order_of(order, values).tolist() == [20.0, 10.0, 40.0, 30.0]

    torch.manual_seed(0)
    net = _Net().eval()
    x = torch.randn(64, 3, 12, 12)
    scores = {}
    for widths in ("own", "l1"):
        scores[widths], l1, _ = _conv1_scores(net, x, {"widths": widths}, "consumer-mi-study")
    assert torch.equal(torch.argsort(scores["own"]), torch.argsort(scores["l1"]))
    assert torch.allclose(torch.sort(scores["l1"]).values, torch.sort(l1.float()).values)
    assert not torch.allclose(torch.sort(scores["own"]).values, torch.sort(l1.float()).values)
