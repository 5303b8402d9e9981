"""MI preserved at the consumers: the greedy loss is the Gaussian-MI form it claims, contributions add up
to the consumer's output, the ranking ignores each output channel's scale (what BatchNorm re-estimation
restores), and the criterion reads channels through concatenations and says when it cannot."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from edge_compress.compress.criteria.registry import make_criterion
from edge_compress.compress.errors import InputError
from edge_compress.compress.metrics import consumer_mi
from edge_compress.compress.pruning.pruner import ChannelPruner


def _direct_loss(z, x, removed):
    z = z - z.mean(0)
    kept = z - (x - x.mean(0))[:, :, removed].sum(2)
    rho = (z * kept).mean(0) / torch.sqrt((z * z).mean(0) * (kept * kept).mean(0))
    return float((1 - rho.clamp(0, 1) ** 2).sum())   # = sum_o exp(-2 I_o) for jointly Gaussian outputs


def _toy(seed=0, m=400, o=5, c=8, rest=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, o, c, generator=g, dtype=torch.float64) * torch.rand(c, generator=g, dtype=torch.float64) * 3
    z = x.sum(2) + (torch.randn(m, o, generator=g, dtype=torch.float64) if rest else 0)   # + channels that stay
    return z, x


@pytest.mark.parametrize("rest", [False, True])
def test_each_greedy_step_is_the_cheapest_removal_and_its_score_is_the_loss(rest):
    z, x = _toy(rest=rest)
    scores = consumer_mi.greedy_removal_scores(z, x)
    order = torch.argsort(scores).tolist()
    for t in range(1, x.shape[2]):
        assert scores[order[t - 1]] == pytest.approx(max(_direct_loss(z, x, order[:s]) for s in range(1, t + 1)),
                                                     rel=1e-9, abs=1e-12)
        best = min(_direct_loss(z, x, order[:t - 1] + [j]) for j in range(x.shape[2]) if j not in order[:t - 1])
        assert _direct_loss(z, x, order[:t]) == pytest.approx(best, rel=1e-9, abs=1e-12)


def test_ranking_ignores_the_scale_of_each_output_channel():
    """BatchNorm re-estimation gives every output channel back its variance: only correlation counts."""
    z, x = _toy()
    scale = torch.tensor([1.0, 10.0, 0.1, 3.0, 100.0], dtype=torch.float64)
    a = consumer_mi.greedy_removal_scores(z, x)
    b = consumer_mi.greedy_removal_scores(z * scale, x * scale[None, :, None])
    assert torch.equal(torch.argsort(a), torch.argsort(b))
    assert torch.allclose(a, b)


def test_contributions_add_up_to_the_convolution_at_the_sampled_positions():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 4, 3, padding=1, stride=2, bias=False)
    inp = torch.randn(3, 6, 9, 9)
    contrib = consumer_mi.contributions(conv, inp, 50, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)   # the same draws: image, then location
    ni, li = torch.randint(3, (50,), generator=g), torch.randint(25, (50,), generator=g)
    full = F.conv2d(inp.double(), conv.weight.double(), stride=2, padding=1).flatten(2)   # N, O, L
    assert contrib.shape == (50, 4, 6)
    assert torch.allclose(contrib.sum(2), full[ni, :, li], atol=1e-10)


def test_bad_contributions_are_refused():
    z, x = _toy()
    with pytest.raises(ValueError, match="NaN or inf"):
        consumer_mi.greedy_removal_scores(z, torch.where(x > 2, float("nan"), x))
    with pytest.raises(ValueError, match="need z"):
        consumer_mi.greedy_removal_scores(z[:, :2], x)
    with pytest.raises(ValueError, match="dense"):
        consumer_mi.contributions(nn.Conv2d(4, 4, 3, groups=4), torch.randn(2, 4, 5, 5), 8, torch.Generator())


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        a = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(torch.relu(self.bn2(self.conv2(a))).mean((2, 3)))


def _net_with_an_unread_large_channel():
    torch.manual_seed(0)
    net = _Net().eval()
    with torch.no_grad():
        net.conv1.weight[5] *= 20          # the largest channel by magnitude...
        net.conv2.weight[:, 5] = 0         # ...that no output of the next layer reads
    return net, torch.randn(64, 3, 12, 12)


def _conv1_scores(net, x, options=None, name="consumer-mi"):
    """consumer-mi's and L1's scores of conv1's channels, and the prepared criterion."""
    crit = make_criterion(name, options or {})
    pruner = ChannelPruner(net, x[:1], 1, 1)
    crit.prepare(pruner.view, x, None)
    info, group = pruner.groups["conv1"], pruner.root_groups_by_name()["conv1"]
    return crit.scores(pruner.view, info, group), make_criterion("l1").scores(pruner.view, info, group), crit


def test_a_channel_its_consumer_ignores_goes_first_whatever_its_magnitude():
    scores, l1, crit = _conv1_scores(*_net_with_an_unread_large_channel())
    assert int(torch.argmin(scores)) == 5
    assert int(torch.argmax(l1)) == 5     # magnitude alone would keep it first
    assert crit.details()["layers"]["conv1"]["consumers"] == ["conv2"]


def test_a_group_no_dense_layer_reads_is_ranked_by_l1_and_says_so(caplog):
    class Conv1dReader(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.d, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Conv1d(8, 6, 1), nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.d(torch.relu(self.c(x)).flatten(2))).mean(2))

    torch.manual_seed(0)
    net = Conv1dReader().eval()
    crit = make_criterion("consumer-mi")
    pruner = ChannelPruner(net, torch.randn(1, 3, 8, 8), 1, 1)
    with caplog.at_level(logging.WARNING, logger="compress"):
        crit.prepare(pruner.view, torch.randn(48, 3, 8, 8), None)
    assert "ranked by L1: c" in caplog.text
    assert "ranked by L1" in crit.details()["layers"]["c"]["why"]
    assert crit.details()["layers"]["d"]["consumers"] == ["fc"]
    info = pruner.groups["c"]
    group = pruner.root_groups_by_name()["c"]
    assert torch.allclose(crit.scores(pruner.view, info, group).double(),
                          make_criterion("l1").scores(pruner.view, info, group).double(), rtol=1e-5)


def test_options_are_checked():
    from edge_compress.compress.errors import InputError

    with pytest.raises(InputError, match="samples"):
        make_criterion("consumer-mi", {"samples": "4"})
    with pytest.raises(InputError, match="batch_size"):
        make_criterion("consumer-mi", {"batch_size": "0"})


def test_wide_groups_keep_fewer_outputs_so_the_covariance_stays_bounded():
    assert consumer_mi.outputs_per_consumer(64, 1) == consumer_mi.MAX_OUTPUTS
    for channels, consumers in [(1024, 3), (2048, 4), (4096, 1)]:
        per = consumer_mi.outputs_per_consumer(channels, consumers)
        assert per >= 2
        assert per == 2 or per * consumers * channels ** 2 <= consumer_mi.MAX_COV_ELEMENTS
    conv = nn.Conv2d(8, 100, 1)
    sub = consumer_mi.output_subset(conv, torch.Generator().manual_seed(0), 10)
    assert len(sub) == 10 and len(set(sub.tolist())) == 10 and sub.tolist() == sorted(sub.tolist())
    assert consumer_mi.output_subset(conv, torch.Generator(), 100) is None


@pytest.mark.parametrize("options", [dict(padding="same"), dict(padding="same", dilation=2),
                                     dict(padding=2, padding_mode="reflect", stride=2),
                                     dict(padding=1, padding_mode="circular"), dict(padding="valid", stride=3),
                                     dict(padding=(1, 2), kernel_size=(3, 5))])
def test_contributions_follow_every_padding_the_convolution_supports(options):
    torch.manual_seed(0)
    options = {"kernel_size": 3, **options}
    conv = nn.Conv2d(5, 4, bias=False, **options).double()
    inp = torch.randn(3, 5, 11, 10, dtype=torch.float64)
    with torch.no_grad():
        out = conv(inp).flatten(2)
    contrib = consumer_mi.contributions(conv, inp, 200, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    ni, li = torch.randint(3, (200,), generator=g), torch.randint(out.shape[2], (200,), generator=g)
    assert torch.allclose(contrib.sum(2), out[ni, :, li], atol=1e-10)


def test_channels_read_twice_and_through_a_concatenation_count_every_reading():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.d, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(12, 5, 1), nn.Linear(5, 3)

        def forward(self, x):
            a = torch.relu(self.c(x))
            return self.fc(torch.relu(self.d(torch.cat([a, a], 1))).mean((2, 3)))

    torch.manual_seed(0)
    net = Twice().eval()
    with torch.no_grad():
        net.c.weight[2] *= 10              # the largest channel...
        net.d.weight[:, [2, 8]] = 0        # ...which neither of its two readings uses
    crit = make_criterion("consumer-mi", {"tie": "0"})   # the loss alone (magnitude would break the near-tie)
    pruner = ChannelPruner(net, torch.randn(1, 3, 8, 8), 1, 1)
    (name, idxs, root_idxs), = pruner.consumer_map()["c"]
    assert name == "d" and sorted(idxs) == list(range(12)) and sorted(root_idxs) == sorted(list(range(6)) * 2)
    crit.prepare(pruner.view, torch.randn(64, 3, 8, 8), None)
    scores = crit.scores(pruner.view, pruner.groups["c"], pruner.root_groups_by_name()["c"])
    assert int(torch.argmin(scores)) == 2


def test_the_removal_order_is_a_strict_order_even_where_the_loss_is_flat():
    z, x = _toy()
    x[:, :, [1, 4]] = 0   # two channels that contribute nothing: both cost nothing to remove
    scores = consumer_mi.greedy_removal_scores(z, x)
    assert len(set(scores.tolist())) == len(scores)
    assert set(torch.argsort(scores)[:2].tolist()) == {1, 4}


def test_another_loss_and_output_weights_are_what_the_greedy_minimises():
    """The variants the study compares (benchmarks/study_plugins.py) go through the same greedy."""
    z, x = _toy()
    w = torch.tensor([1.0, 0.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    corr = lambda rho: 1 - rho.clamp(0, 1)   # noqa: E731

    def direct(removed):
        zc = z - z.mean(0)
        kept = zc - (x - x.mean(0))[:, :, removed].sum(2)
        rho = (zc * kept).mean(0) / torch.sqrt((zc * zc).mean(0) * (kept * kept).mean(0))
        return float((w * corr(rho)).sum())

    scores = consumer_mi.greedy_removal_scores(z, x, corr, w)
    order = torch.argsort(scores).tolist()
    for t in range(1, x.shape[2]):
        best = min(direct(order[:t - 1] + [j]) for j in range(x.shape[2]) if j not in order[:t - 1])
        assert direct(order[:t]) == pytest.approx(best, rel=1e-9, abs=1e-12)
    negative = consumer_mi.greedy_removal_scores(z, x, lambda rho: torch.log((1 - rho ** 2).clamp_min(1e-9)))
    assert len(set(negative.tolist())) == x.shape[2] and float(negative.max()) < 0   # no clamp at zero


def _direct_order_with_ties(z, x, magnitude, tie):
    """The tie rule written out: at every step the loss increment of each candidate from scratch, the
    band min + tie x (median - min), the least magnitude inside it."""
    order, c = [], x.shape[2]
    while len(order) < c:
        left = [j for j in range(c) if j not in order]
        current = _direct_loss(z, x, order) if order else 0.0
        inc = torch.tensor([_direct_loss(z, x, order + [j]) - current for j in left], dtype=torch.float64)
        bound = inc.min() + tie * (inc.median() - inc.min())
        near = [j for j, v in zip(left, inc) if v <= bound + 1e-12]
        order.append(min(near, key=lambda j: float(magnitude[j])))
    return order


@pytest.mark.parametrize("tie", [0.25, 0.5, 1.0])
def test_magnitude_breaks_near_ties_inside_the_band(tie):
    z, x = _toy(seed=3, c=9)
    magnitude = torch.rand(9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scores = consumer_mi.greedy_removal_scores(z, x, magnitude=magnitude, tie=tie)
    assert torch.argsort(scores).tolist() == _direct_order_with_ties(z, x, magnitude, tie)


def test_tie_zero_is_the_least_loss_and_a_huge_tie_is_magnitude_order():
    z, x = _toy(seed=3, c=9)
    magnitude = torch.rand(9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    plain = consumer_mi.greedy_removal_scores(z, x)
    assert torch.equal(consumer_mi.greedy_removal_scores(z, x, magnitude=magnitude, tie=0.0), plain)
    by_magnitude = torch.argsort(consumer_mi.greedy_removal_scores(z, x, magnitude=magnitude, tie=1e9)).tolist()
    # the band reaches the lower median, so with two channels left it holds only the cheaper one
    assert by_magnitude[:7] == torch.argsort(magnitude).tolist()[:7]
    assert by_magnitude != torch.argsort(plain).tolist()   # the rule did something


def test_tie_needs_a_magnitude_per_channel_and_a_non_negative_value():
    z, x = _toy()
    with pytest.raises(ValueError, match="tie"):
        consumer_mi.greedy_removal_scores(z, x, tie=0.5)
    with pytest.raises(ValueError, match="tie"):
        consumer_mi.greedy_removal_scores(z, x, magnitude=torch.ones(3), tie=0.5)
    with pytest.raises(ValueError, match="tie"):
        consumer_mi.greedy_removal_scores(z, x, magnitude=torch.ones(x.shape[2]), tie=-1.0)
    for bad in ("-0.5", "nan"):
        with pytest.raises(InputError, match="tie"):
            make_criterion("consumer-mi", {"tie": bad})


def test_the_criterion_hands_the_groups_l1_to_the_tie_rule():
    """With the whole band open, the criterion removes channels in the order of L1 over the coupled group
    (up to the last two), where consumer-mi alone removes the unread large channel first."""
    net, x = _net_with_an_unread_large_channel()
    order = {}
    for tie in ("0", "1e9"):
        scores, l1, _ = _conv1_scores(net, x, {"tie": tie})
        order[tie] = torch.argsort(scores).tolist()
    assert order["0"][0] == 5
    assert order["1e9"][:6] == torch.argsort(l1).tolist()[:6]
    assert 5 in order["1e9"][-2:]   # the largest by L1 stays to the end
