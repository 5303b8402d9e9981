"""ChannelPruner: safety analysis (ResNet option A, classifier), channel rounding, depthwise convs,
every criterion on every reference family, and that exactly the lowest-scoring channels are removed."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp

from edge_compress.compress.search.removal import prune_to
from edge_compress.compress.archs import get_arch
from edge_compress.compress.archs.resnet_cifar import BasicBlock, PadShortcut
from edge_compress.compress.criteria.baselines import TorchPruningCriterion
from edge_compress.compress.criteria.registry import criterion_names, make_criterion
from edge_compress.compress.errors import PruningError
from edge_compress.compress.pruning.groups import GroupInfo
from edge_compress.compress.pruning.pruner import ChannelPruner
from helpers_units import randomise_bn

X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
X2 = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
# Calibration data for the data-driven criteria (Taylor and the information methods): random inputs and labels.
XC = torch.randn(40, 3, 32, 32, generator=torch.Generator().manual_seed(2))
YC = torch.arange(40) % 8
SMALL = {"resnet20": {}, "mobilenetv2": {"width_mult": 0.25}, "example-cnn": {"width": 8}}


def _model(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomise_bn(get_arch(arch).factory(**SMALL[arch]), seed).eval()


def _pruner(model, criterion="l1", multiple=4, minimum=4) -> ChannelPruner:
    return ChannelPruner(model, X, channel_multiple=multiple, min_channels=minimum)


def _blocks(model) -> dict[str, BasicBlock]:
    return {n: m for n, m in model.named_modules() if isinstance(m, BasicBlock)}


def _assert_valid_resnet(model, num_classes=10):
    """Runs, keeps its output shape, and every option-A shortcut still lines up with its block."""
    with torch.no_grad():
        y = model(X2)
    assert y.shape == (2, num_classes) and torch.isfinite(y).all()
    for name, block in _blocks(model).items():
        assert block.conv1.out_channels == block.bn1.num_features == block.conv2.in_channels, name
        assert block.conv2.out_channels == block.bn2.num_features, name
        if isinstance(block.shortcut, PadShortcut):
            assert block.shortcut.in_channels == block.conv1.in_channels, name   # reads the stream before
            assert block.shortcut.out_channels == block.conv2.out_channels, name  # writes the stream after
        else:
            assert block.conv1.in_channels == block.conv2.out_channels, name


# ---- analysis on ResNet-20 (option A) ------------------------------------------------------------

@pytest.fixture
def resnet20_pruner():
    model = _model("resnet20")
    return model, _pruner(model)


STREAM = ["conv1"] + [f"layer{i}.{j}.conv2" for i in (1, 2, 3) for j in range(3)]


def test_resnet20_residual_streams_are_prunable_and_the_classifier_is_not(resnet20_pruner):
    _, pruner = resnet20_pruner
    groups = pruner.groups
    # The classifier's outputs are the model's outputs.
    assert groups["linear"].prunable is False
    assert "output shape" in groups["linear"].reason
    # Every layer writing into a residual stream belongs to a prunable group: the option-A shortcut is a
    # layer with its own channel map (tests/test_option_a.py), so each stage's stream is its own group.
    for layer in STREAM:
        owners = [g for g in groups.values() if g.root == layer or layer in g.members]
        assert owners and all(g.prunable for g in owners if g.root != "linear"), layer
    assert [g.root for g in groups.values() if not g.prunable] == ["linear"]


def test_resnet20_every_block_inner_conv_is_prunable(resnet20_pruner):
    model, pruner = resnet20_pruner
    blocks = _blocks(model)
    assert len(blocks) == 9
    for name, block in blocks.items():
        info = pruner.groups[f"{name}.conv1"]
        assert info.prunable and info.reason == ""
        assert info.original_channels == info.channels == block.conv1.out_channels
        assert {f"{name}.conv1", f"{name}.bn1", f"{name}.conv2"} <= set(info.members)
        assert all(not m.startswith("<") for m in info.members)  # layer names only
    streams = ["conv1", "layer2.0.conv2", "layer3.0.conv2"]   # each stage's residual stream
    assert sorted(g.root for g in pruner.prunable_groups) == sorted([f"{n}.conv1" for n in blocks] + streams)


def test_resnet20_prune_half_rounds_and_stays_valid(resnet20_pruner):
    model, pruner = resnet20_pruner
    params_before = sum(p.numel() for p in model.parameters())
    removed = prune_to(pruner, make_criterion("l1"), 0.5)
    assert removed == 4 * (8 + 16 + 32)   # half of each block's inner channels and of each stage's stream
    for name, block in _blocks(model).items():
        info = pruner.groups[f"{name}.conv1"]
        planes = {"layer1": 16, "layer2": 32, "layer3": 64}[name.split(".")[0]]
        assert info.channels == block.conv1.out_channels == planes // 2
        assert info.channels % 4 == 0 and info.channels >= 4
        assert block.conv2.out_channels == planes // 2   # the stream, halved with its shortcut
    assert model.linear.in_features == 32 and model.linear.out_features == 10
    assert sum(p.numel() for p in model.parameters()) < params_before
    _assert_valid_resnet(model)
    assert prune_to(pruner, make_criterion("l1"), 0.5) == 0  # already there


def test_resnet20_prune_to_zero_leaves_exactly_min_channels(resnet20_pruner):
    model, pruner = resnet20_pruner
    prune_to(pruner, make_criterion("l1"), 0.0)
    for name, block in _blocks(model).items():
        assert block.conv1.out_channels == 4 == pruner.groups[f"{name}.conv1"].channels
    assert pruner.at_minimum()
    assert prune_to(pruner, make_criterion("l1"), 0.0) == 0
    _assert_valid_resnet(model)


def test_prune_in_steps_matches_multiple_and_minimum():
    model = _model("resnet20")
    pruner = _pruner(model, multiple=8, minimum=8)
    assert not pruner.at_minimum()
    prune_to(pruner, make_criterion("l1"), 0.7)
    for info in pruner.prunable_groups:
        if info.channels < info.original_channels:
            assert info.channels % 8 == 0 and info.channels >= 8
    # 16 * 0.7 = 11.2 -> 8; 32 * 0.7 = 22.4 -> 24; 64 * 0.7 = 44.8 -> 48
    assert sorted({g.channels for g in pruner.prunable_groups}) == [8, 24, 48]
    prune_to(pruner, make_criterion("l1"), 0.3)
    assert sorted({g.channels for g in pruner.prunable_groups}) == [8, 16]  # 16*0.3 -> 8 (min), 9.6 -> 8, 19.2 -> 16
    _assert_valid_resnet(model)


@pytest.mark.parametrize("original,keep,multiple,minimum,expected", [
    (16, 0.5, 4, 4, 8), (16, 0.3, 4, 4, 4), (16, 0.4, 4, 4, 8), (16, 0.0, 4, 4, 4), (16, 1.0, 4, 4, 16),
    (6, 0.5, 4, 4, 4), (6, 0.9, 4, 4, 4), (3, 0.0, 4, 4, 3), (10, 0.55, 1, 1, 6), (10, 0.0, 1, 1, 1),
    (64, 0.7, 8, 8, 48), (64, 0.05, 8, 8, 8),
])
def test_target_channels(original, keep, multiple, minimum, expected):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    pruner_crit = make_criterion("l1")
    pruner = ChannelPruner(model, torch.randn(1, 3, 5, 5), multiple, minimum)
    info = GroupInfo("x", original, original, ["x"])
    assert pruner.target_channels(info, keep) == expected


def test_groups_at_the_minimum_are_reported():
    model = get_arch("example-cnn").factory(width=4).eval()  # first two convs have 4 channels
    pruner = _pruner(model, multiple=4, minimum=8)
    small = [g for g in pruner.groups.values() if g.original_channels == 4]
    assert small and all(not g.prunable and "already at the minimum of 8" in g.reason for g in small)


def test_a_criterion_without_scores_is_a_pruning_error():
    class NoScores(tp.importance.Importance):
        def __call__(self, group):
            return None

    model = _model("example-cnn")
    pruner_crit = TorchPruningCriterion("custom", NoScores())
    pruner = ChannelPruner(model, X, 4, 4)
    with pytest.raises(PruningError) as exc:
        prune_to(pruner, pruner_crit, 0.5)
    assert "no usable scores" in str(exc.value)


# ---- MobileNetV2 (depthwise) ---------------------------------------------------------------------

def _assert_valid_mobilenet(model):
    with torch.no_grad():
        y = model(X2)
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 17
    for m in depthwise:
        assert m.groups == m.in_channels == m.out_channels and m.weight.shape[1] == 1


def test_mobilenetv2_prunes_and_stays_valid():
    model = _model("mobilenetv2")
    convs_before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    pruner = _pruner(model)
    assert pruner.groups["classifier"].prunable is False
    assert len(pruner.prunable_groups) > 10
    assert prune_to(pruner, make_criterion("l1"), 0.5) > 0
    _assert_valid_mobilenet(model)
    changed = 0
    for info in pruner.prunable_groups:
        root = dict(model.named_modules())[info.root]
        assert root.out_channels == info.channels
        if info.channels < info.original_channels:
            changed += 1
            assert info.channels % 4 == 0 and info.channels >= 4
    assert changed > 10
    after = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert sum(after.values()) < sum(convs_before.values())
    prune_to(pruner, make_criterion("l1"), 0.0)
    _assert_valid_mobilenet(model)
    assert pruner.at_minimum()


# ---- contract: every criterion x every reference family -------------------------------------------

@pytest.fixture(scope="module")
def analysed():
    """One (costly) safety analysis per family; each test prunes a deep copy through `for_copy`."""
    out = {}
    for arch in SMALL:
        model = _model(arch)
        out[arch] = (model, _pruner(model))
    return out


@pytest.mark.parametrize("arch", list(SMALL))
@pytest.mark.parametrize("criterion", criterion_names())
def test_every_criterion_prunes_every_family(analysed, arch, criterion):
    original, base = analysed[arch]
    model = copy.deepcopy(original)
    pruner_crit = make_criterion(criterion)
    pruner = base.for_copy(model)
    assert pruner.analysed and pruner.groups.keys() == base.groups.keys()
    params_before = sum(p.numel() for p in model.parameters())
    pruner_crit.prepare(pruner.view, XC, YC)
    removed = prune_to(pruner, pruner_crit, 0.7)
    assert removed > 0
    assert sum(p.numel() for p in model.parameters()) < params_before
    for info in pruner.prunable_groups:
        assert info.channels % 4 == 0 or info.channels == info.original_channels
        assert info.channels >= min(4, info.original_channels)
    # the base analysis is untouched by pruning the copy
    assert all(g.channels == g.original_channels for g in base.groups.values())
    if arch == "resnet20":
        _assert_valid_resnet(model)
    elif arch == "mobilenetv2":
        _assert_valid_mobilenet(model)
    else:
        with torch.no_grad():
            y = model(X2)
        assert y.shape == (2, 8) and torch.isfinite(y).all()


def test_criteria_registry():
    assert set(criterion_names()) >= {"l1", "l2", "bn-scale", "taylor", "lamp", "fpgm", "random",
                                      "cmi", "mipp", "mi-gradient", "capacity-independence", "consumer-mi"}
    from edge_compress.compress.errors import InputError

    with pytest.raises(InputError) as exc:
        make_criterion("taylor-9000")
    assert all(n in str(exc.value) for n in criterion_names())


# ---- index exactness -----------------------------------------------------------------------------

class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(torch.relu(self.conv2(x)).mean((2, 3)))


def test_the_lowest_norm_channels_are_the_ones_removed():
    g = torch.Generator().manual_seed(0)
    s1 = torch.tensor([5.0, 1.0, 8.0, 3.0, 7.0, 2.0, 6.0, 4.0])  # conv1 channel norms: lowest are 1, 5, 3, 7
    s2 = torch.tensor([2.0, 8.0, 1.0, 7.0, 3.0, 6.0, 4.0, 5.0])  # conv2 channel norms: lowest are 2, 0, 4, 6
    model = Plain().eval()
    with torch.no_grad():
        w1 = torch.randn(8, 3, 3, 3, generator=g)
        model.conv1.weight.copy_(w1 / w1.abs().sum((1, 2, 3), keepdim=True) * s1[:, None, None, None])
        # conv2's in-channel slices scale with s1 and its out-channel slices with s2, so both groups
        # (conv1 out + bn1 + conv2 in; conv2 out + fc in) order their channels exactly by s1 and s2.
        r = torch.randn(8, 1, 3, 3, generator=g)
        r = r / r.abs().sum((1, 2, 3), keepdim=True)
        model.conv2.weight.copy_(r * s2[:, None, None, None] * s1[None, :, None, None])
        model.fc.weight.copy_(torch.tensor([1.0, -1.0])[:, None] * s2[None, :])
        model.bn1.weight.fill_(1.0)  # equal scales: the BN does not reorder conv1's channels
        model.bn1.bias.copy_(torch.randn(8, generator=g))
        model.bn1.running_mean.copy_(torch.randn(8, generator=g))
        model.bn1.running_var.copy_(torch.rand(8, generator=g) + 0.5)
    original = copy.deepcopy(model)
    pruner_crit = make_criterion("l1")
    pruner = ChannelPruner(model, torch.randn(1, 3, 8, 8), channel_multiple=1, min_channels=1)
    assert {g.root for g in pruner.prunable_groups} == {"conv1", "conv2"}
    assert prune_to(pruner, pruner_crit, 0.5) == 8

    keep1 = torch.tensor([0, 2, 4, 6])  # s1 = 5, 8, 7, 6
    keep2 = torch.tensor([1, 3, 5, 7])  # s2 = 8, 7, 6, 5
    assert torch.equal(model.conv1.weight, original.conv1.weight[keep1])
    for attr in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(getattr(model.bn1, attr), getattr(original.bn1, attr)[keep1]), attr
    assert torch.equal(model.conv2.weight, original.conv2.weight[keep2][:, keep1])
    assert torch.equal(model.fc.weight, original.fc.weight[:, keep2])
    assert torch.equal(model.fc.bias, original.fc.bias)
