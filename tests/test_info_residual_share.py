"""The residual share consumer-mi weighs output channels by: found through torch.fx from the consumer,
through BatchNorm, to the addition; measured as var(branch) / var(sum) whether the block adds in place
or not; absent (and said) when the model cannot be traced; and it changes which channel goes first."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

from edge_compress.compress.criteria.registry import make_criterion
from edge_compress.compress.metrics.residual_share import BranchShares, branch_ends
from edge_compress.compress.pruning.pruner import ChannelPruner


def branch_shares(model, x, consumers, batch_size=64):
    """The shares over `x` in batches, and why there are none; the model's outputs must be unchanged (to
    float tolerance: the traced graph runs through torch.fx's interpreter, another code path than eager)."""
    rec = BranchShares(model, consumers)
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            torch.testing.assert_close(rec(x[i:i + batch_size]), model(x[i:i + batch_size]))
    return rec.shares(), rec.why


class _Block(nn.Module):
    def __init__(self, inplace: bool):
        super().__init__()
        self.inplace = inplace
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(s)))))
        if self.inplace:
            out += s
        else:
            out = out + s
        return self.head(torch.relu(out).mean((2, 3)))


def _trained_like(net):
    with torch.no_grad():
        for bn, gamma in ((net.bn1, [1.0, 1.0, 1.0, 1.0]), (net.bn2, [0.01, 3.0, 0.5, 1.0])):
            bn.weight.copy_(torch.tensor(gamma))
            bn.running_var.fill_(4.0)
    return net.eval()


@pytest.mark.parametrize("inplace", [False, True])
def test_the_share_is_the_branch_variance_over_the_sum_variance(inplace):
    torch.manual_seed(0)
    net = _trained_like(_Block(inplace))
    x = torch.randn(40, 3, 8, 8)
    assert set(branch_ends(fx.symbolic_trace(net), {"conv1", "conv2", "head"})) == {"conv2"}   # conv1 feeds a ReLU
    shares, why = branch_shares(net, x, {"conv1", "conv2"}, batch_size=16)
    assert why is None and set(shares) == {"conv2"}
    with torch.no_grad():
        s = torch.relu(net.stem(x)).double()
        b = net.bn2(net.conv2(torch.relu(net.bn1(net.conv1(s.float()))))).double()
    expect = b.var((0, 2, 3), unbiased=False) / (b + s).var((0, 2, 3), unbiased=False)
    assert torch.allclose(shares["conv2"], expect, rtol=1e-6)
    assert 100 * float(shares["conv2"][0]) < float(shares["conv2"][1])   # gamma 0.01 vs 3


def test_a_model_fx_cannot_trace_gets_no_shares_and_a_reason():
    class Branchy(_Block):
        def forward(self, x):
            if x.sum() > 0:      # data-dependent control flow
                x = x * 2
            return super().forward(x)

    shares, why = branch_shares(Branchy(False).eval(), torch.randn(4, 3, 8, 8), {"conv2"})
    assert shares == {} and "torch.fx cannot trace" in why


class _TwoWay(nn.Module):
    """conv1's channel 0 feeds only conv2's output 0, which has no shortcut; channel 1 only output 1,
    whose shortcut dwarfs it: equal by themselves, unequal for what the block passes on."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 2, 1, bias=False)
        self.conv2 = nn.Conv2d(2, 2, 1, bias=False)
        self.register_buffer("scale", torch.tensor([0.0, 30.0]).view(1, 2, 1, 1))
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        out = self.conv2(torch.relu(self.conv1(x[:, :2]))) + x[:, 2:] * self.scale
        return self.head(out.mean((2, 3)))

    def init(self):
        with torch.no_grad():
            self.conv1.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
            self.conv2.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        return self.eval()


def _scores(residual: bool):
    torch.manual_seed(0)
    net = _TwoWay().init()
    x = torch.randn(64, 4, 6, 6)
    crit = make_criterion("consumer-mi", {"residual": residual})
    pruner = ChannelPruner(net, x[:1], 1, 1)
    crit.prepare(pruner.view, x, None)
    return crit.scores(pruner.view, pruner.groups["conv1"], pruner.root_groups_by_name()["conv1"]), crit.details()


def test_the_weighting_removes_the_channel_whose_output_a_strong_shortcut_carries_first():
    unweighted, _ = _scores(False)
    weighted, details = _scores(True)
    # Without the shares each removal kills one output channel outright: the first costs 1 whichever channel
    # it is, the second 2. The two channels tie (to rounding, ~1e-15), so which goes first is not asserted.
    torch.testing.assert_close(unweighted.sort().values, torch.tensor([1.0, 2.0], dtype=unweighted.dtype),
                               atol=1e-6, rtol=0)
    # With them, channel 1 goes first by a wide margin: its output channel carries almost nothing of its sum
    # (its shortcut is scaled by 30, a share ~4e-4), while removing channel 0 still costs a whole output.
    assert float(weighted[1]) < 0.01 and float(weighted[0]) > 0.99
    assert float(weighted[1]) < 0.01 * float(weighted[0])
    assert details["layers"]["conv1"]["residual_weighted"] == ["conv2"]


def test_untraceable_models_still_rank_and_say_why(caplog):
    class Branchy(_TwoWay):
        def forward(self, x):
            if x.mean() > 10:
                x = x * 0
            return super().forward(x)

    torch.manual_seed(0)
    net = Branchy().init()
    x = torch.randn(32, 4, 6, 6)
    crit = make_criterion("consumer-mi")
    pruner = ChannelPruner(net, x[:1], 1, 1)
    with caplog.at_level(logging.WARNING, logger="compress"):
        crit.prepare(pruner.view, x, None)
    assert "torch.fx cannot trace" in caplog.text and "residual=false" in caplog.text
    assert "torch.fx cannot trace" in crit.details()["layers"]["conv1"]["residual_untraced"]


def test_linear_branches_count_with_their_channels_on_the_last_dimension():
    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.head = nn.Linear(6, 12), nn.Linear(12, 6), nn.Linear(6, 2)

        def forward(self, x):   # (N, 6), or (N, L, 6) tokens whose channels are on the last dim
            return self.head(x + self.fc2(torch.relu(self.fc1(x))))

    torch.manual_seed(0)
    net = Mlp().eval()
    shares, why = branch_shares(net, torch.randn(50, 6), {"fc1", "fc2"})
    assert why is None and set(shares) == {"fc2"} and shares["fc2"].shape == (6,)
    tokens = torch.randn(50, 5, 6)   # (N, L, C): a Linear's channels are the last dimension
    shares, _ = branch_shares(net, tokens, {"fc2"})
    with torch.no_grad():
        b = net.fc2(torch.relu(net.fc1(tokens))).double()
    expect = b.var((0, 1), unbiased=False) / (b + tokens.double()).var((0, 1), unbiased=False)
    assert shares["fc2"].shape == (6,) and torch.allclose(shares["fc2"], expect, rtol=1e-6)
