"""The budget search: knapsack selection priced by the cost model, the closed loop, and depth pruning."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from edge_compress.compress.search.removal import prune_to, prune_lowest
from edge_compress.compress import compress, load_pruned
from edge_compress.compress.criteria.registry import make_criterion
from edge_compress.compress.pruning.depth import removable_blocks
from edge_compress.compress.model_io import pruned_checkpoint, rebuild_pruned
from edge_compress.compress.pruning.pruner import ChannelPruner
from edge_compress.compress.search.knapsack import ResourceModel, plan_round
from edge_compress.compress.costmodel.model import layer_costs
from edge_compress.compress.passes.prune import LATENCY_MARGIN

TINY = dict(arch="example-cnn", arch_kwargs={"width": 8})


def _resnet20(seed=0):
    from edge_compress.compress.archs import get_arch
    from helpers_units import randomise_bn

    torch.manual_seed(seed)
    return randomise_bn(get_arch("resnet20").factory(), seed).eval()


def test_knapsack_meets_a_macs_budget_close_to_the_limit(tiny_model_file, calib_file, tmp_path):
    r = compress(tiny_model_file, target="host", calib=str(calib_file), macs="50%", out=tmp_path / "o",
                 progress=False, **TINY)
    assert r.verdict == "met"
    budget = r.report["budget"]["macs"]
    assert 0.8 * budget <= r.final.macs <= budget          # not wastefully far below the budget
    rounds = r.report["pruning"]["rounds"]
    assert rounds and all(rd["selection"] == "knapsack" and rd["binding"] == "macs" for rd in rounds)
    assert r.report["pruning"]["selection"] == "knapsack"


def test_knapsack_closed_loop_on_measured_latency(tiny_model_file, calib_file, tmp_path):
    r = compress(tiny_model_file, target="host", calib=str(calib_file), latency_ms="75%", out=tmp_path / "o",
                 progress=False, **TINY)
    # 75 % is a ratio: the loop's confirmation and the final measurement time the candidate interleaved
    # with the original, so the final ratio stays within a few percent of the confirmed one even on a
    # shared machine (timed one after the other, a 0.05 ms model moved by 20 %).
    assert r.final.latency_kind.startswith("measured") and "interleaved" in r.final.latency_kind
    last = r.report["pruning"]["rounds"][-1]
    assert last["meets_budget"] and last["binding"] == "latency_ms"
    assert last["metrics"]["latency_ms"] <= last["original_latency_ms_interleaved"] * 0.75 * LATENCY_MARGIN
    # The final measurement is a new one: on a loaded machine it may land either side of the budget, and the
    # verdict must say which (a wall-clock threshold here would test the machine, not the code).
    assert (r.verdict == "met") == (r.final.latency_ms <= r.budget.latency_ms)


def test_uniform_selection_is_still_available(tiny_model_file, calib_file, tmp_path):
    r = compress(tiny_model_file, target="host", calib=str(calib_file), macs="60%", selection="uniform",
                 out=tmp_path / "o", progress=False, **TINY)
    assert r.verdict == "met" and r.report["pruning"]["rounds"][0]["selection"] == "uniform"


def test_unknown_selection_is_an_input_error(tiny_model_file, tmp_path):
    from edge_compress.compress.errors import InputError

    with pytest.raises(InputError, match="unknown --selection"):
        compress(tiny_model_file, target="host", macs="60%", selection="greedy", out=tmp_path / "o",
                 progress=False, **TINY)


def test_plan_meets_the_saving_and_prices_it_exactly():
    """The plan saves what was asked, and its priced saving is the MACs difference after pruning it."""
    model = _resnet20()
    pruner_crit = make_criterion("random")
    pruner = ChannelPruner(model, torch.randn(1, 3, 32, 32), 1, 1)
    costs = layer_costs(model, pruner.example_input)
    rm = ResourceModel(pruner.view, costs, None, sum(p.numel() for p in model.parameters()))
    total = rm.value("macs")
    plan = plan_round(pruner.view, pruner_crit, rm, "macs", 0.05 * total, lambda i: 1, pruner.floor_of)
    assert plan.saving >= 0.05 * total and plan.remove
    # the priced saving of the plan equals the exact MACs difference after pruning it
    before = total
    prune_lowest(pruner, pruner_crit, plan.remove)
    after = sum(c.macs for c in layer_costs(model, pruner.example_input))
    assert before - after == pytest.approx(plan.saving, rel=1e-6)


def _block_at_floor(layer_overhead_ms: float):
    """ResNet-20 with block layer1.1's inner channels at the minimum (so the block can go whole), and its resource
    model on jetson-nano's cost model with the given per-layer overhead."""
    from dataclasses import replace

    from edge_compress.compress.costmodel.model import factors_from_profile
    from edge_compress.device_profiles import load_profile

    model, x = _resnet20(), torch.randn(1, 3, 32, 32)
    crit = make_criterion("l1")
    pruner = ChannelPruner(model, x, 4, 4)
    prune_lowest(pruner, crit, {"layer1.1.conv1": pruner.groups["layer1.1.conv1"].channels - 4})
    factors = replace(factors_from_profile(load_profile("jetson-nano")), layer_overhead_ms=layer_overhead_ms)
    rm = ResourceModel(pruner.view, layer_costs(model, x), factors, sum(p.numel() for p in model.parameters()))
    return pruner, crit, rm


def test_a_block_that_would_overshoot_the_round_waits_where_channels_fill_it_for_less():
    """A whole block is one coarse item. Priced cheaply per unit saved, it is taken while the round needs about what it
    saves; where it alone saves far more than the round still needs and channels reach the need at less importance,
    channels fill the round; where channels cannot (a device whose per-layer overhead dwarfs compute), it goes."""
    pruner, crit, rm = _block_at_floor(0.1)
    gain = rm.saving("latency_ms", {}, ("layer1.1",))
    plan = lambda need: plan_round(pruner.view, crit, rm, "latency_ms", need, lambda i: 4, pruner.floor_of,
                                   pruner.depth_blocks())
    assert plan(0.9 * gain).blocks == ["layer1.1"] and plan(0.3 * gain).blocks == ["layer1.1"]
    small = plan(0.1 * gain)
    assert small.blocks == [] and small.remove and small.saving >= 0.1 * gain and small.value < 32
    pruner, crit, rm = _block_at_floor(0.5)
    gain = rm.saving("latency_ms", {}, ("layer1.1",))
    assert gain > 1.0   # two layers' overhead
    plan = lambda need: plan_round(pruner.view, crit, rm, "latency_ms", need, lambda i: 4, pruner.floor_of,
                                   pruner.depth_blocks())
    assert plan(0.1 * gain).blocks == ["layer1.1"]


def test_depth_pruning_replaces_blocks_exactly_and_reloads(tmp_path):
    model = _resnet20()
    x = torch.randn(4, 3, 32, 32)
    assert removable_blocks(model) == ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2",
                                       "layer3.1", "layer3.2"]
    pruner_crit = make_criterion("l1")
    pruner = ChannelPruner(model, x[:1], 4, 4)
    prune_to(pruner, pruner_crit, 0.0)
    blocks = pruner.depth_blocks()
    assert set(blocks) == set(removable_blocks(model)) and blocks["layer1.1"] == ["layer1.1.conv1"]
    # removing a block is exactly relu(x) in its place
    reference = copy.deepcopy(model)
    with torch.no_grad():
        inner = dict(reference.named_modules())["layer2.1"]
        inner.bn2.weight.zero_()
        inner.bn2.bias.zero_()
        expected = reference(x)
    pruner2 = pruner.without_blocks(["layer2.1"])
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
    assert "layer2.1.conv1" not in pruner2.groups and pruner2.removed_blocks == ["layer2.1"]
    ckpt = pruned_checkpoint(model, "resnet20", {})
    assert ckpt["removed_blocks"] == ["layer2.1"]
    rebuilt, _ = rebuild_pruned(ckpt)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_depth_pruning_in_the_search_when_overhead_dominates(tmp_path, shared_dir):
    """A device whose per-layer overhead dwarfs compute: channel pruning alone cannot meet the budget."""
    profile = tmp_path / "slow-layers.yaml"
    profile.write_text("extends: jetson-nano\nname: slow-layers\ncost_model:\n  layer_overhead_ms: 0.5\n"
                       "  network_overhead_ms: 0\n")
    model = shared_dir / "models" / "resnet20-12fca82f.th"
    r = compress(model, target=str(profile), arch="resnet20", latency_ms="85%", out=tmp_path / "o",
                 progress=False)
    assert r.verdict == "met"
    removed = r.report["pruning"]["blocks_removed"]
    assert removed
    reloaded = load_pruned(r.out_dir / "model.pruned.pt")
    assert all(isinstance(dict(reloaded.named_modules())[b], torch.nn.ReLU) for b in removed)
    assert json.loads((r.out_dir / "report.json").read_text())["pruning"]["blocks_removed"] == removed
