"""Exact index mapping (issue 4, item 4, Safety): channels made exactly dead all along their coupled group
(zero producing filters and biases, zero BatchNorm scale AND shift, zero depthwise filters) are pruned
through ChannelPruner, and the pruned model must give the original's outputs to float tolerance.

One small model per architecture family: identity residual stream (three producers), option-A zero-padding
shortcut (the reference CIFAR ResNet's BasicBlock), concatenation (DenseNet / Inception-like, one branch at
two offsets), depthwise separable (inverted residual), grouped convolution (ResNeXt-like), squeeze-excitation
(1x1-conv and Linear variants) and channel shuffle (plain, and a ShuffleNet unit).

The dead channels are chosen and zeroed by hand from each architecture's semantics (`kill`), never from the
dependency graph, so a wrong mapping in the graph shows up as a changed output. A test criterion scores the
target channels 0 and the others 1 by ORIGINAL index (through `GroupInfo.kept`) and allocates every group
exactly its remaining fraction, so `prune_to` (channel_multiple=1, min_channels=1) removes exactly them.
The control prunes live channels instead: the output must change, and exactly as zeroing them by hand does.
"""
from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from edge_compress.compress.search.removal import prune_to
from edge_compress.compress.archs.resnet_cifar import BasicBlock, PadShortcut
from edge_compress.compress.criteria.base import Criterion
from edge_compress.compress.pruning.pruner import ChannelPruner

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))   # the pruner's example input
XS = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))  # the inputs compared


def _conv(cin, cout, k=1, groups=1, bias=False, stride=1):
    return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=bias)


@torch.no_grad()
def _zero(idxs, *layers):
    """Zero output channels `idxs` of convs / linears (filters and bias) and BatchNorms (scale and shift)."""
    for layer in layers:
        layer.weight[list(idxs)] = 0
        if layer.bias is not None:
            layer.bias[list(idxs)] = 0


# ---- the architectures -----------------------------------------------------------------------------------
# Each names "key" layers and has kill(dead), which makes original output channels `dead[key]` of each key layer
# exactly dead all along their coupled group, by hand. DEAD: the channels made dead for the exactness test;
# LIVE: other channels for the control; MAY_REFUSE: keys whose group the pruner may instead leave unprunable
# (with a reason); MUST_REFUSE: keys whose group it must leave unprunable.

class IdentityRes(nn.Module):
    """Two basic blocks with identity shortcuts: the stream is one group with three producers."""

    DEAD = {"stem": [1, 6], "b1c1": [2], "b2c1": [0, 5]}
    LIVE = {"stem": [0, 3], "b1c1": [4], "b2c1": [1]}
    MAY_REFUSE: set[str] = set()
    MUST_REFUSE: set[str] = set()

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = _conv(3, 8, 3), nn.BatchNorm2d(8)
        self.b1c1, self.b1n1, self.b1c2, self.b1n2 = _conv(8, 6, 3), nn.BatchNorm2d(6), _conv(6, 8, 3), nn.BatchNorm2d(8)
        self.b2c1, self.b2n1, self.b2c2, self.b2n2 = _conv(8, 6, 3), nn.BatchNorm2d(6), _conv(6, 8, 3), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        s = F.relu(self.bn0(self.stem(x)))
        s = F.relu(s + self.b1n2(self.b1c2(F.relu(self.b1n1(self.b1c1(s))))))
        s = F.relu(s + self.b2n2(self.b2c2(F.relu(self.b2n1(self.b2c1(s))))))
        return self.fc(s.mean((2, 3)))

    def kill(self, dead):
        _zero(dead.get("stem", []), self.stem, self.bn0, self.b1c2, self.b1n2, self.b2c2, self.b2n2)
        _zero(dead.get("b1c1", []), self.b1c1, self.b1n1)
        _zero(dead.get("b2c1", []), self.b2c1, self.b2n1)


class OptionA(nn.Module):
    """The reference CIFAR ResNet's BasicBlock in two stages joined by its zero-padding (option A) shortcut.

    Stage-1 stream channel k lands on stage-2 stream position k + pad through the shortcut; each stage's stream is
    its own group, so a stage-1 channel is dead once the stage-1 layers writing it are (the pad carries the zeros)."""

    DEAD = {"stem": [1], "layer1.0.conv1": [1], "layer2.0.conv1": [0, 5]}
    LIVE = {"stem": [2], "layer1.0.conv1": [0], "layer2.0.conv1": [3, 7]}
    MAY_REFUSE: set[str] = set()
    MUST_REFUSE: set[str] = set()   # the shortcut is a layer with a channel map: each stage's stream prunes exactly

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = _conv(3, 4, 3), nn.BatchNorm2d(4)
        self.layer1 = nn.Sequential(BasicBlock(4, 4))
        self.layer2 = nn.Sequential(BasicBlock(4, 8, stride=2))
        assert isinstance(self.layer2[0].shortcut, PadShortcut) and self.layer2[0].shortcut.pad == 2
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        s = self.layer2(self.layer1(F.relu(self.bn0(self.stem(x)))))
        return self.fc(s.mean((2, 3)))

    def kill(self, dead):
        b1, b2 = self.layer1[0], self.layer2[0]
        stream = dead.get("stem", [])
        _zero(stream, self.stem, self.bn0, b1.conv2, b1.bn2)
        _zero(dead.get("layer1.0.conv1", []), b1.conv1, b1.bn1)
        _zero(dead.get("layer2.0.conv1", []), b2.conv1, b2.bn1)


class Concat(nn.Module):
    """DenseNet / Inception-like: cat([stem, a, b]) and cat([b, a]) (branch a at offsets 8 and 4), then two
    convs whose outputs are added (one group with two producers)."""

    DEAD = {"stem": [1, 6], "a": [0, 4], "b": [3], "c": [2]}
    LIVE = {"stem": [0], "a": [2, 5], "b": [1], "c": [7]}
    MAY_REFUSE: set[str] = set()
    MUST_REFUSE: set[str] = set()

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = _conv(3, 8, 3), nn.BatchNorm2d(8)
        self.a, self.bna = _conv(8, 6, 3, bias=True), nn.BatchNorm2d(6)
        self.b, self.bnb = _conv(8, 4, 1, bias=True), nn.BatchNorm2d(4)
        self.c, self.bnc = _conv(18, 8, 1), nn.BatchNorm2d(8)
        self.d, self.bnd = _conv(10, 8, 3), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        s = F.relu(self.bn0(self.stem(x)))
        a = F.relu(self.bna(self.a(s)))
        b = F.relu(self.bnb(self.b(s)))
        y = F.relu(self.bnc(self.c(torch.cat([s, a, b], 1)))) + F.relu(self.bnd(self.d(torch.cat([b, a], 1))))
        return self.fc(y.mean((2, 3)))

    def kill(self, dead):
        _zero(dead.get("stem", []), self.stem, self.bn0)
        _zero(dead.get("a", []), self.a, self.bna)
        _zero(dead.get("b", []), self.b, self.bnb)
        _zero(dead.get("c", []), self.c, self.bnc, self.d, self.bnd)


class Depthwise(nn.Module):
    """MobileNetV2-like inverted residual: pw expand -> dw -> pw project, + stem; dw coupled to the expand."""

    DEAD = {"expand": [2, 7, 9], "stem": [4]}
    LIVE = {"expand": [0, 5], "stem": [1]}
    MAY_REFUSE: set[str] = set()
    MUST_REFUSE: set[str] = set()

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = _conv(3, 8, 3), nn.BatchNorm2d(8)
        self.expand, self.bn1 = _conv(8, 12), nn.BatchNorm2d(12)
        self.dw, self.bn2 = _conv(12, 12, 3, groups=12, bias=True), nn.BatchNorm2d(12)
        self.project, self.bn3 = _conv(12, 8), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        s = F.relu(self.bn0(self.stem(x)))
        h = F.relu6(self.bn2(self.dw(F.relu6(self.bn1(self.expand(s))))))
        return self.fc((s + self.bn3(self.project(h))).mean((2, 3)))

    def kill(self, dead):
        _zero(dead.get("expand", []), self.expand, self.bn1, self.dw, self.bn2)
        _zero(dead.get("stem", []), self.stem, self.bn0, self.project, self.bn3)


class Grouped(nn.Module):
    """ResNeXt-like bottleneck: 1x1 -> 3x3 grouped (groups=2) -> 1x1, identity shortcut.

    The dead channels of the layers feeding / being the grouped conv sit at the same position in each of its
    two groups of 4 (reduce: 1 and 5; grouped: 2 and 6)."""

    DEAD = {"reduce": [1, 5], "grouped": [2, 6], "stem": [3]}
    LIVE = {"reduce": [0, 4], "grouped": [1, 5], "stem": [5]}
    MAY_REFUSE: set[str] = set()
    MUST_REFUSE: set[str] = set()

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = _conv(3, 8, 3), nn.BatchNorm2d(8)
        self.reduce, self.bn1 = _conv(8, 8), nn.BatchNorm2d(8)
        self.grouped, self.bn2 = _conv(8, 8, 3, groups=2), nn.BatchNorm2d(8)
        self.restore, self.bn3 = _conv(8, 8), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        s = F.relu(self.bn0(self.stem(x)))
        h = F.relu(self.bn2(self.grouped(F.relu(self.bn1(self.reduce(s))))))
        return self.fc(F.relu(s + self.bn3(self.restore(h))).mean((2, 3)))

    def kill(self, dead):
        _zero(dead.get("reduce", []), self.reduce, self.bn1)
        _zero(dead.get("grouped", []), self.grouped, self.bn2)
        _zero(dead.get("stem", []), self.stem, self.bn0, self.restore, self.bn3)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation with 1x1 convs: pool -> reduce -> relu -> expand -> sigmoid -> * features."""

    DEAD = {"features": [3, 11, 12], "se_reduce": [1]}
    LIVE = {"features": [0, 7], "se_reduce": [2]}
    MAY_REFUSE: set[str] = set()
    MUST_REFUSE: set[str] = set()

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = _conv(3, 8, 3), nn.BatchNorm2d(8)
        self.features, self.bn1 = _conv(8, 16, 3), nn.BatchNorm2d(16)
        self.se_reduce, self.se_expand = self.se_layers()
        with torch.no_grad():
            self.se_reduce.bias.uniform_(0.5, 1.0)   # every reduce unit active: none is dead by its ReLU
        self.out, self.bn2 = _conv(16, 8), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def se_layers(self):
        return _conv(16, 4, bias=True), _conv(4, 16, bias=True)

    def excite(self, f):
        return torch.sigmoid(self.se_expand(F.relu(self.se_reduce(f.mean((2, 3), keepdim=True)))))

    def forward(self, x):
        f = F.relu(self.bn1(self.features(F.relu(self.bn0(self.stem(x))))))
        return self.fc(F.relu(self.bn2(self.out(f * self.excite(f)))).mean((2, 3)))

    def kill(self, dead):
        # A dead channel's gate is sigmoid(0) = 0.5, times a feature that is exactly 0.
        _zero(dead.get("features", []), self.features, self.bn1, self.se_expand)
        _zero(dead.get("se_reduce", []), self.se_reduce)


class SqueezeExciteLinear(SqueezeExcite):
    """The same with Linear layers and a view back to (N, C, 1, 1), as many implementations write it."""

    def se_layers(self):
        return nn.Linear(16, 4), nn.Linear(4, 16)

    def excite(self, f):
        w = torch.sigmoid(self.se_expand(F.relu(self.se_reduce(f.mean((2, 3))))))
        return w.view(w.shape[0], w.shape[1], 1, 1)


def channel_shuffle(x, groups):
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def shuffled(c, channels=8, groups=2):
    """Where channel c lands after channel_shuffle."""
    per = channels // groups
    return (c % per) * groups + c // per


class Shuffle(nn.Module):
    """Channel shuffle (groups=2) between two plain convolutions.

    Only the same position in each shuffle group can go exactly (otherwise the shuffle of the remaining
    channels is another permutation): a's channels 1 and 5, which land on positions 2 and 3 of b's input."""

    DEAD = {"a": [1, 5], "stem": [2]}
    LIVE = {"a": [2, 6], "stem": [5]}
    MAY_REFUSE = {"a"}   # refusing the group that crosses the shuffle is fine; mapping it wrongly is not
    MUST_REFUSE: set[str] = set()

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = _conv(3, 8, 3), nn.BatchNorm2d(8)
        self.a, self.bn1 = _conv(8, 8), nn.BatchNorm2d(8)
        self.b, self.bn2 = _conv(8, 8, 3), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        s = F.relu(self.bn0(self.stem(x)))
        h = channel_shuffle(F.relu(self.bn1(self.a(s))), 2)
        return self.fc(F.relu(self.bn2(self.b(h))).mean((2, 3)))

    def kill(self, dead):
        _zero(dead.get("a", []), self.a, self.bn1)
        _zero(dead.get("stem", []), self.stem, self.bn0)


class ShuffleUnit(nn.Module):
    """A ShuffleNet v1 unit: grouped 1x1 -> shuffle -> depthwise 3x3 -> grouped 1x1, identity shortcut.

    g1's dead channels (1, 3, 5, 7) sit at the same positions in each of its groups and, once shuffled (2, 3, 6,
    7), at the same positions in each group of g2; the depthwise filters at the shuffled positions are zeroed."""

    DEAD = {"g1": [1, 3, 5, 7], "stem": [2, 6]}
    LIVE = {"g1": [0, 2, 4, 6], "stem": [0, 4]}
    MAY_REFUSE = {"g1"}
    MUST_REFUSE: set[str] = set()

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = _conv(3, 8, 3), nn.BatchNorm2d(8)
        self.g1, self.bn1 = _conv(8, 8, groups=2), nn.BatchNorm2d(8)
        self.dw, self.bn2 = _conv(8, 8, 3, groups=8), nn.BatchNorm2d(8)
        self.g2, self.bn3 = _conv(8, 8, groups=2), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        s = F.relu(self.bn0(self.stem(x)))
        h = channel_shuffle(F.relu(self.bn1(self.g1(s))), 2)
        h = self.bn3(self.g2(self.bn2(self.dw(h))))
        return self.fc(F.relu(s + h).mean((2, 3)))

    def kill(self, dead):
        g1 = dead.get("g1", [])
        _zero(g1, self.g1, self.bn1)
        _zero([shuffled(c) for c in g1], self.dw, self.bn2)
        _zero(dead.get("stem", []), self.stem, self.bn0, self.g2, self.bn3)


ARCHS = {
    "identity-residual": IdentityRes,
    "option-a-residual": OptionA,
    "concatenation": Concat,
    "depthwise": Depthwise,
    "grouped": Grouped,
    "squeeze-excite": SqueezeExcite,
    "squeeze-excite-linear": SqueezeExciteLinear,
    "channel-shuffle": Shuffle,
    "shuffle-unit": ShuffleUnit,
}


# ---- the harness -----------------------------------------------------------------------------------------

class Targeted(Criterion):
    """Scores 0 for the target ORIGINAL channels of a group's root, 1 for the others (mapped through
    `info.kept`), and allocates every group exactly the fraction that removes its targets."""

    name = "targeted"

    def __init__(self, target: dict[str, set[int]], original: dict[str, int]):
        self.target, self.original = target, original

    def scores(self, pruner, info, group):
        target = self.target.get(info.root, set())
        return torch.tensor([0.0 if k in target else 1.0 for k in info.kept])

    def own_keep_fractions(self):
        return {root: 1 - len(self.target.get(root, ())) / n for root, n in self.original.items()}


@torch.no_grad()
def _build(arch, dead=None, seed=0):
    """Random weights; BatchNorm statistics from a random batch, then randomly perturbed, and random affine
    parameters (so that every channel is active on some inputs: no channel is dead by its ReLU); then the
    channels `dead` (default DEAD) killed."""
    torch.manual_seed(seed)
    model = ARCHS[arch]()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.momentum = None                      # cumulative: the statistics of the one batch below
    model.train()(torch.randn(16, 3, 16, 16))
    g = torch.Generator().manual_seed(seed)
    for bn in bns:
        n = bn.num_features
        bn.momentum = 0.1
        bn.running_mean += 0.2 * (torch.rand(n, generator=g) - 0.5)
        bn.running_var *= 0.8 + 0.4 * torch.rand(n, generator=g)
        bn.weight.copy_(0.5 + torch.rand(n, generator=g))
        bn.bias.copy_(0.5 * torch.rand(n, generator=g) - 0.2)
    model.kill(ARCHS[arch].DEAD if dead is None else dead)
    return model.eval()


@functools.lru_cache(maxsize=None)
def _analysed(arch) -> ChannelPruner:
    """The safety analysis (trial prunes) of each architecture, done once and reused through for_copy."""
    return ChannelPruner(_build(arch), X, channel_multiple=1, min_channels=1)


def _roots(pruner, keys):
    """The group root of each key layer: the layer itself, or the one group it produces channels for, with
    an identity mapping (residual adds, depthwise convs, SE gates map channel i to channel i)."""
    out = {}
    for key in keys:
        roots = [r for r in pruner.groups if r == key] or \
                [r for r in pruner.groups if any(p == key for p, _, _ in pruner.producers(r))]
        assert len(roots) == 1, (key, roots)
        if roots[0] != key:
            (mine, theirs), = [(p_idx, r_idx) for p, p_idx, r_idx in pruner.producers(roots[0]) if p == key]
            assert mine == theirs, f"{key} does not map one to one onto the channels of {roots[0]}"
        out[key] = roots[0]
    assert len(set(out.values())) == len(out), f"two keys share a group: {out}"
    return out


def _prune(arch, target, dead=None):
    """Prune the `target` channels (by key layer) of the model with `dead` killed.

    Returns (the model before pruning, the pruned model, the pruner, the removed original channels by key)."""
    model = _build(arch, dead)
    before = copy.deepcopy(model)
    crit = Targeted({}, {})
    pruner = _analysed(arch).for_copy(model)
    roots = _roots(pruner, ARCHS[arch].DEAD)
    crit.target = {roots[k]: set(v) for k, v in target.items()}
    crit.original = {g.root: g.original_channels for g in pruner.prunable_groups}
    if crit.original:
        own = sum(f * crit.original[r] for r, f in crit.own_keep_fractions().items()) / sum(crit.original.values())
        prune_to(pruner, crit, own)
    key_of = {r: k for k, r in roots.items()}
    removed = {}
    for info in pruner.groups.values():
        gone = set(range(info.original_channels)) - set(info.kept)
        assert info.channels == len(info.kept) == info.original_channels - len(gone), info
        if not info.prunable:
            assert info.reason.strip(), f"{arch}: {info.root} is unprunable without a reason"
        assert info.root in key_of or not gone, f"{arch}: {info.root} lost {sorted(gone)} though nothing targeted it"
        if info.root in key_of:
            removed[key_of[info.root]] = gone
    return before, model, pruner, removed


def _out(model):
    with torch.no_grad():
        y = model(XS)
    assert y.shape == (4, 5) and torch.isfinite(y).all()
    return y


def _close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ---- the tests -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_live_channel_of_the_fixtures_matters(arch):
    """The check is sensitive: killing any one further channel of a key layer changes the output."""
    cls = ARCHS[arch]
    model = _build(arch)
    y = _out(model)
    layers = dict(model.named_modules())
    for key, dead in cls.DEAD.items():
        for c in range(layers[key].weight.shape[0]):
            if c in dead:
                continue
            probe = copy.deepcopy(model)
            probe.kill({key: [c]})
            assert (_out(probe) - y).abs().max() > 1e-4, (arch, key, c)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_pruning_exactly_the_dead_channels_keeps_the_outputs(arch):
    cls = ARCHS[arch]
    before, model, pruner, removed = _prune(arch, cls.DEAD)
    _close(_out(model), _out(before))
    roots = _roots(pruner, cls.DEAD)
    for key, dead in cls.DEAD.items():
        info = pruner.groups[roots[key]]
        if key in cls.MUST_REFUSE:
            assert not info.prunable, f"{arch}: group {info.root} ({key}) must be left unprunable"
        elif key not in cls.MAY_REFUSE:
            assert info.prunable, f"{arch}: group {info.root} ({key}) is unprunable: {info.reason}"
        assert removed[key] == (set(dead) if info.prunable else set()), (arch, key, sorted(removed[key]))
    assert not pruner.groups["fc"].prunable and "output shape" in pruner.groups["fc"].reason
    layers = dict(model.named_modules())
    for key in cls.DEAD:
        info = pruner.groups[roots[key]]
        assert layers[key].weight.shape[0] == info.original_channels - len(removed[key])


@pytest.mark.parametrize("arch", list(ARCHS))
def test_pruning_live_channels_changes_the_outputs_exactly_as_zeroing_them(arch):
    """Control: pruned live channels must show, and as the same channels zeroed by hand along their group."""
    cls = ARCHS[arch]
    before, model, pruner, removed = _prune(arch, cls.LIVE)
    assert any(removed.values())
    for key, live in cls.LIVE.items():
        assert removed[key] in (set(live), set()), (arch, key)
    ablated = copy.deepcopy(before)
    ablated.kill({k: sorted(v) for k, v in removed.items()})
    y = _out(model)
    assert (y - _out(before)).abs().max() > 1e-4
    _close(y, _out(ablated))


def test_option_a_streams_are_groups_of_their_own_and_the_inner_channels_prune_exactly():
    _, _, pruner, removed = _prune("option-a-residual", OptionA.DEAD)
    owner = {layer: next(g for g in pruner.groups.values() if g.root == layer or layer in g.members)
             for layer in ["stem", "layer1.0.conv2", "layer2.0.conv2"]}   # every layer writing into a residual stream
    assert owner["stem"] is owner["layer1.0.conv2"] and owner["layer2.0.conv2"] is not owner["stem"]
    assert all(g.prunable for g in owner.values()), [(g.root, g.reason) for g in owner.values()]
    assert removed["stem"] == {1} and removed["layer1.0.conv1"] == {1} and removed["layer2.0.conv1"] == {0, 5}


@pytest.mark.parametrize("dead", [
    {"reduce": [4, 5], "grouped": [2, 6], "stem": [3]},   # both dead inputs of the grouped conv in its 2nd group
    {"reduce": [1, 5], "grouped": [2], "stem": [3]},      # one dead output: 7 is not a multiple of groups=2
], ids=["uneven-positions", "odd-count"])
def test_grouped_conv_selection_that_does_not_fit_its_groups_is_refused_or_exact(dead):
    """Dead channels that a grouped conv cannot lose exactly: the pruner must refuse (unprunable, with a reason)
    or prune something it can, and then the output must equal the original with those channels zeroed."""
    before, model, pruner, removed = _prune("grouped", dead, dead)
    ablated = copy.deepcopy(before)
    ablated.kill({k: sorted(v) for k, v in removed.items()})
    _close(_out(model), _out(ablated))
