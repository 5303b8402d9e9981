"""The hard structures of issue 20 (item 5), pruned and exact: layer-by-layer concatenation (DenseNet), a YOLO
C2f block (torch.chunk, its halves concatenated with every bottleneck's output), GroupNorm (whole normalisation
groups), and a U-Net skip concatenation; and the true reason for every group left unpruned.

Each model names the groups it must be able to prune, and `kill(dead)` makes original output channels `dead[key]`
of a key layer exactly dead all along their coupled group, by hand from the architecture (producing filters,
biases, norm scale AND shift, and every norm reading the channel through a concatenation), never from the
dependency graph. A criterion scoring exactly those channels lowest then prunes them, and the outputs must not
change (to float tolerance); each set of dead channels must have mattered before it was killed.
"""
from __future__ import annotations

import copy
import functools
import inspect
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from edge_compress.compress.search.removal import prune_to
from edge_compress.compress.cli import main
from edge_compress.compress.criteria.registry import make_criterion
from edge_compress.compress.pruning.pruner import ChannelPruner
from helpers_dead import assert_same_outputs, prune_dead, zero_channels

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))    # the pruner's example input
XS = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))   # the inputs compared


# ---- the models (small widths, 32x32 inputs) --------------------------------------------------------------

class DenseLayer(nn.Module):
    """BN-ReLU-Conv 1x1 (2 x growth) - BN-ReLU-Conv 3x3 (growth), as torchvision's _DenseLayer."""

    def __init__(self, cin, growth):
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 2 * growth, 1, bias=False)
        self.norm2, self.conv2 = nn.BatchNorm2d(2 * growth), nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))


class DenseNet(nn.Module):
    """Stem (stride 2), a dense block (every layer's output concatenated to all before it), a transition (BN-ReLU, 1x1
    conv, avgpool), a second dense block, BN-ReLU, pool, classifier."""

    DEAD = {"conv0": [1, 6], "block1.0.conv1": [3], "block1.1.conv2": [2, 5], "trans_conv": [0, 7],
            "block2.2.conv2": [4]}

    def __init__(self, num_classes=10, growth=8, layers=(3, 3)):
        super().__init__()
        self.conv0, self.norm0 = nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16)
        c = 16
        self.block1 = nn.ModuleList()
        for _ in range(layers[0]):
            self.block1.append(DenseLayer(c, growth))
            c += growth
        self.trans_norm, self.trans_conv = nn.BatchNorm2d(c), nn.Conv2d(c, c // 2, 1, bias=False)
        c //= 2
        self.block2 = nn.ModuleList()
        for _ in range(layers[1]):
            self.block2.append(DenseLayer(c, growth))
            c += growth
        self.norm5, self.fc = nn.BatchNorm2d(c), nn.Linear(c, num_classes)

    def forward(self, x):
        x = F.relu(self.norm0(self.conv0(x)))
        x = F.avg_pool2d(self.trans_conv(F.relu(self.trans_norm(self.dense(self.block1, x)))), 2)
        return self.fc(F.relu(self.norm5(self.dense(self.block2, x))).mean((2, 3)))

    @staticmethod
    def dense(block, x):
        """As torchvision's _DenseBlock: each layer reads the concatenation of all features before it."""
        features = [x]
        for layer in block:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)

    def kill(self, dead):
        """A concatenated segment at offset o is read by every later norm of its block: zero those at o + c."""
        for b, (block, base, out_norm) in enumerate([(self.block1, self.conv0.out_channels, self.trans_norm),
                                                     (self.block2, self.trans_conv.out_channels, self.norm5)]):
            segments = [("conv0" if b == 0 else "trans_conv", 0, -1)]
            segments += [(f"block{b + 1}.{i}.conv2", base + i * layer.conv2.out_channels, i)
                         for i, layer in enumerate(block)]
            for key, offset, after in segments:
                idxs = dead.get(key, [])
                readers = [layer.norm1 for layer in block[after + 1:]] + [out_norm]
                producers = {"conv0": [self.conv0, self.norm0], "trans_conv": [self.trans_conv]}.get(key) or \
                    [block[after].conv2]
                zero_channels(idxs, *producers)
                for norm in readers:
                    zero_channels([offset + c for c in idxs], norm)
            for i, layer in enumerate(block):
                zero_channels(dead.get(f"block{b + 1}.{i}.conv1", []), layer.conv1, layer.norm2)


class Conv(nn.Module):
    """Conv - BN - SiLU, as in YOLOv8."""

    def __init__(self, cin, cout, k=1, s=1):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.silu(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cv1, self.cv2 = Conv(c, c, 3), Conv(c, c, 3)

    def forward(self, x):
        return x + self.cv2(self.cv1(x))


class C2f(nn.Module):
    """YOLOv8's C2f: cv1 to 2c channels, chunked in two; each bottleneck reads the last part; all concatenated."""

    def __init__(self, cin, cout, n=2):
        super().__init__()
        self.c = cout // 2
        self.cv1 = Conv(cin, 2 * self.c)
        self.m = nn.ModuleList(Bottleneck(self.c) for _ in range(n))
        self.cv2 = Conv((2 + n) * self.c, cout)

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class C2fSplit(C2f):
    """YOLOv8's other C2f forward: split at the fixed sizes (c, c) its code holds."""

    def forward(self, x):
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        c = cin // 2
        self.cv1, self.cv2 = Conv(cin, c), Conv(4 * c, cout)

    def forward(self, x):
        x = self.cv1(x)
        y1 = F.max_pool2d(x, 5, 1, 2)
        y2 = F.max_pool2d(y1, 5, 1, 2)
        return self.cv2(torch.cat([x, y1, y2, F.max_pool2d(y2, 5, 1, 2)], 1))


class YoloC2f(nn.Module):
    """Conv stem, C2f with 2 bottlenecks, SPPF, a 1x1 detection head (4 box values + classes per cell)."""

    DEAD = {"c2f.cv1.conv": [1, 5, 17, 21], "c2f.m.0.cv1.conv": [2], "sppf.cv1.conv": [3, 9], "stem.conv": [0]}
    C2F = C2f

    def __init__(self, num_classes=10):
        super().__init__()
        self.stem, self.down = Conv(3, 16, 3, 2), Conv(16, 32, 3, 2)
        self.c2f, self.sppf = self.C2F(32, 32, 2), SPPF(32, 32)
        self.head = nn.Conv2d(32, num_classes + 4, 1)

    def forward(self, x):
        return self.head(self.sppf(self.c2f(self.down(self.stem(x)))))

    def kill(self, dead):
        """cv1's second half is the bottlenecks' residual stream: each bottleneck's cv2 adds to the same channel."""
        c2f, half = self.c2f, self.c2f.c
        split = dead.get("c2f.cv1.conv", [])
        zero_channels(split, c2f.cv1.conv, c2f.cv1.bn)
        for m in c2f.m:
            zero_channels([k - half for k in split if k >= half], m.cv2.conv, m.cv2.bn)
        for i, m in enumerate(c2f.m):
            zero_channels(dead.get(f"c2f.m.{i}.cv1.conv", []), m.cv1.conv, m.cv1.bn)
        zero_channels(dead.get("sppf.cv1.conv", []), self.sppf.cv1.conv, self.sppf.cv1.bn)   # max-pool of zeros is zero
        zero_channels(dead.get("stem.conv", []), self.stem.conv, self.stem.bn)


class YoloC2fSplit(YoloC2f):
    C2F = C2fSplit


class GNNet(nn.Module):
    """conv - GroupNorm - ReLU - conv - GroupNorm - ReLU - pool - classifier."""

    DEAD = {"conv1": [4, 5, 6, 7], "conv2": [0, 1, 2, 3, 12, 13, 14, 15]}   # whole groups of 4

    def __init__(self, num_classes=10, width=32, groups=8, groups2=None):
        super().__init__()
        self.conv1, self.gn1 = nn.Conv2d(3, width, 3, padding=1), nn.GroupNorm(groups, width)
        self.conv2, self.gn2 = nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(groups2 or groups, width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        x = F.relu(self.gn1(self.conv1(x)))
        return self.fc(F.relu(self.gn2(self.conv2(x))).mean((2, 3)))

    def kill(self, dead):
        zero_channels(dead.get("conv1", []), self.conv1, self.gn1)
        zero_channels(dead.get("conv2", []), self.conv2, self.gn2)


class GNConcat(nn.Module):
    """Two branches of 6 and 10 channels concatenated into one GroupNorm of 4 groups of 4: a's groups straddle b's."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(3, 10, 3, padding=1)
        self.gn, self.c = nn.GroupNorm(4, 16), nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        y = F.relu(self.gn(torch.cat([self.a(x), self.b(x)], 1)))
        return self.fc(F.relu(self.c(y)).mean((2, 3)))


class UNet(nn.Module):
    """Encoder, a stride-2 stage, upsampling, the skip concatenated, a decoder conv, per-pixel class scores."""

    DEAD = {"enc1.conv": [2, 5], "mid.conv": [3], "enc2.conv": [1, 30], "dec.conv": [0]}

    def __init__(self, num_classes=3):
        super().__init__()
        self.enc1, self.enc2, self.mid = Conv(3, 16, 3), Conv(16, 32, 3, 2), Conv(32, 32, 3)
        self.dec, self.out = Conv(32 + 16, 16, 3), nn.Conv2d(16, num_classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        m = F.interpolate(self.mid(self.enc2(e1)), scale_factor=2.0, mode="nearest")
        return self.out(self.dec(torch.cat([m, e1], 1)))

    def kill(self, dead):
        for key in ("enc1", "enc2", "mid", "dec"):
            layer = getattr(self, key)
            zero_channels(dead.get(f"{key}.conv", []), layer.conv, layer.bn)


def densenet(num_classes=10):
    return DenseNet(num_classes)


def yolo_c2f(num_classes=10):
    return YoloC2f(num_classes)


def gn_net(num_classes=10):
    return GNNet(num_classes)


def unet(num_classes=3):
    return UNet(num_classes)


ARCHS = {"densenet": DenseNet, "yolo-c2f": YoloC2f, "groupnorm": GNNet, "unet": UNet}
FACTORIES = {"densenet": densenet, "yolo-c2f": yolo_c2f, "groupnorm": gn_net, "unet": unet}
HEADS = {"densenet": "fc", "yolo-c2f": "head", "groupnorm": "fc", "unet": "out"}   # the model's outputs
PRUNED = {"densenet": "conv0", "yolo-c2f": "c2f.cv1.conv", "groupnorm": "conv1", "unet": "enc1.conv"}


# ---- the harness -----------------------------------------------------------------------------------------

@torch.no_grad()
def _build(arch, dead=None, seed=0):
    """Random weights, norms with statistics from a random batch and random affine parameters (no channel is dead
    by its activation); then the channels `dead` killed."""
    torch.manual_seed(seed)
    model = ARCHS[arch]()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.momentum = None
    model.train()(torch.randn(8, 3, 32, 32))
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            n = m.weight.shape[0]
            m.weight.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.copy_(0.5 * torch.rand(n, generator=g) - 0.2)
    if dead:
        model.kill(dead)
    return model.eval()


@functools.lru_cache(maxsize=None)
def _analysed(arch) -> ChannelPruner:
    """The safety analysis of each model, done once and reused through for_copy."""
    return ChannelPruner(_build(arch), X, channel_multiple=1, min_channels=1)


def _out(model):
    with torch.no_grad():
        return model(XS)


# ---- which groups are prunable, and why the others are not ------------------------------------------------

@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_group_but_the_output_layer_is_prunable(arch):
    pruner = _analysed(arch)
    head = pruner.groups[HEADS[arch]]
    assert not head.prunable and "output shape" in head.reason
    unprunable = {g.root: g.reason for g in pruner.groups.values() if not g.prunable and g.root != HEADS[arch]}
    assert not unprunable, unprunable
    for key in ARCHS[arch].DEAD:
        assert pruner.groups[key].prunable, key


def test_densenet_each_concatenated_segment_is_its_own_group():
    groups = _analysed("densenet").groups
    segments = ["conv0", "trans_conv"] + [f"block{b}.{i}.conv2" for b in (1, 2) for i in range(3)]
    for root in segments:
        assert groups[root].prunable and groups[root].divisor == groups[root].block == 1, root
    assert {"conv0", "norm0", "block1.0.norm1", "block1.2.norm1", "trans_norm"} <= set(groups["conv0"].members)
    assert "block2.0.norm1" not in groups["conv0"].members   # the transition ends the concatenation


def test_c2f_chunked_tensor_is_one_group_pruned_in_equal_halves():
    groups = _analysed("yolo-c2f").groups
    cv1 = groups["c2f.cv1.conv"]
    assert cv1.prunable and cv1.divisor == cv1.chunks == 2 and cv1.original_channels == 32
    # the second half is the bottlenecks' residual stream: their second convs are in the same group
    assert {"c2f.m.0.cv2.conv", "c2f.m.1.cv2.conv", "c2f.cv2.conv"} <= set(cv1.members)
    assert "c2f.m.0.cv2.conv" not in groups and "c2f.m.1.cv2.conv" not in groups
    assert groups["c2f.m.0.cv1.conv"].prunable and groups["c2f.m.1.cv1.conv"].prunable


def test_c2f_split_at_fixed_sizes_is_left_unpruned_with_its_reason_and_the_rest_prunes():
    model = YoloC2fSplit().eval()
    pruner_crit = make_criterion("l1")
    pruner = ChannelPruner(model, X, channel_multiple=1, min_channels=1)
    cv1 = pruner.groups["c2f.cv1.conv"]
    assert not cv1.prunable and "torch.split at fixed sizes" in cv1.reason
    assert pruner.groups["c2f.m.0.cv1.conv"].prunable and pruner.groups["sppf.cv1.conv"].prunable
    prune_to(pruner, pruner_crit, 0.5)
    assert model(XS).shape == (4, 14, 8, 8)


def test_groupnorm_groups_go_whole_and_the_rounding_composes():
    info = _analysed("groupnorm").groups["conv1"]
    assert info.prunable and info.block == 4 and info.divisor == 1
    model = GNNet(width=48, groups=8)   # 6 channels per group, a channel multiple of 8: steps of 24
    pruner_crit = make_criterion("l1")
    pruner = ChannelPruner(model.eval(), X, channel_multiple=8, min_channels=8)
    info = pruner.groups["conv1"]
    assert info.block == 6 and pruner.step_of(info) == 24 and pruner.floor_of(info) == 12
    assert pruner.target_channels(info, 0.5) == 24
    prune_to(pruner, pruner_crit, 0.5)
    assert (model.gn1.num_groups, model.gn1.num_channels, model.conv1.out_channels) == (4, 24, 24)
    assert model(XS).shape == (4, 10)


@pytest.mark.parametrize("model, root, words", [
    (GNNet(groups=8, groups2=1), "conv2", "GroupNorm: its 32 channels are a single normalisation group"),
    (GNConcat(), "a", "GroupNorm: gn's groups of 4 channels do not line up"),
], ids=["one-group", "straddling"])
def test_groupnorm_that_cannot_lose_whole_groups_says_so(model, root, words):
    pruner_crit = make_criterion("l1")
    pruner = ChannelPruner(model.eval(), X, channel_multiple=1, min_channels=1)
    assert not pruner.groups[root].prunable and pruner.groups[root].reason.startswith(words), pruner.groups[root]
    prune_to(pruner, pruner_crit, 0.5)
    assert model(XS).shape == (4, 10)


# ---- pruning to half: runs, the right shape -----------------------------------------------------------------

@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("multiple", [1, 8])
def test_prune_to_half_runs_with_the_output_shape(arch, multiple):
    model = _build(arch)
    shape = _out(model).shape
    pruner_crit = make_criterion("l1")
    pruner = _analysed(arch).for_copy(model)
    pruner.channel_multiple, pruner.min_channels = multiple, multiple
    before = sum(g.channels for g in pruner.prunable_groups)
    removed = prune_to(pruner, pruner_crit, 0.5)
    assert removed > 0 and sum(g.channels for g in pruner.prunable_groups) == before - removed
    assert _out(model).shape == shape
    for g in pruner.prunable_groups:
        assert g.channels % pruner.step_of(g) == 0 or g.channels == pruner.floor_of(g), g
    prune_to(pruner, pruner_crit, 0.0)   # and again, from the pruned state: indices recomputed from the pruned graph
    assert _out(model).shape == shape


# ---- exactness: pruning dead channels keeps the outputs -----------------------------------------------------

@pytest.mark.parametrize("arch", list(ARCHS))
def test_pruning_exactly_the_dead_channels_keeps_the_outputs(arch):
    dead = ARCHS[arch].DEAD
    alive = _build(arch)
    model = _build(arch, dead)
    assert (_out(alive) - _out(model)).abs().max() > 1e-3   # the channels killed mattered
    before = copy.deepcopy(model)
    pruner = _analysed(arch).for_copy(model)
    prune_dead(pruner, dead)
    layers = dict(model.named_modules())
    for key, idxs in dead.items():
        assert layers[key].out_channels == pruner.groups[key].original_channels - len(idxs)
    assert_same_outputs([_out(model)], [_out(before)])


def test_groupnorm_loses_its_normalisation_groups_with_the_channels():
    model = _build("groupnorm", GNNet.DEAD)
    prune_dead(_analysed("groupnorm").for_copy(model), GNNet.DEAD)
    assert (model.gn1.num_groups, model.gn1.num_channels) == (7, 28)
    assert (model.gn2.num_groups, model.gn2.num_channels) == (6, 24)


# ---- end to end through the CLI --------------------------------------------------------------------------

@pytest.fixture
def arch_module(tmp_path, monkeypatch):
    """These models as a user's own module (`--arch structures_zoo:densenet`), importable from tmp_path."""
    parts = [DenseLayer, DenseNet, Conv, Bottleneck, C2f, SPPF, YoloC2f, GNNet, UNet, zero_channels, *FACTORIES.values()]
    source = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n\n" + \
        "\n\n".join(inspect.getsource(p) for p in parts)
    (tmp_path / "structures_zoo.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "structures_zoo"


# Every structure on a predicted target; the one no zoo architecture has (GroupNorm) also measured on host (the
# zoo's contract tests run DenseNet-121, YOLOv8-n and the U-Net there).
@pytest.mark.parametrize("arch,target", [(a, "jetson-nano") for a in ARCHS] + [("groupnorm", "host")])
def test_cli_compresses_each_structure_to_half_the_macs(arch, target, arch_module, tmp_path, capsys):
    model_path = tmp_path / f"{arch}.pt"
    torch.save(_build(arch).state_dict(), model_path)
    out = tmp_path / "out"
    timing = ["--timing-precision", "10"] if target == "host" else []
    code = main(["--target", target, "--arch", f"{arch_module}:{FACTORIES[arch].__name__}",
                 "--input-shape", "1x3x32x32", "--macs", "50%", "--criterion", "l1", "--out", str(out),
                 *timing, str(model_path)])
    err = capsys.readouterr().err
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    after = {g["root"]: g for g in report["pruning"]["groups_after"]}
    assert after[PRUNED[arch]]["channels"] < after[PRUNED[arch]]["original_channels"]
    for g in report["pruning"]["groups"]:   # the console names every group left unpruned, with its reason
        assert g["prunable"] or f"left unpruned: {g['root']} ({g['reason']})" in err
