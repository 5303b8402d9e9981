"""Zero-padding ("option A") residual streams of CIFAR ResNets, pruned exactly.

Each stage's stream is its own group (the shortcut a layer with a channel map); stream channels made dead
and then pruned leave the outputs unchanged; the map survives save/load (and a crafted map is refused),
exports to ONNX at opsets 13 and 17 with ONNX Runtime parity and onnx-simplifier, and a user's
akamaster-style LambdaLayer shortcut is converted only when it computes exactly the pad.
"""
from __future__ import annotations

import copy
import io
import textwrap
import uuid

import onnx
import pytest
import torch
import torch.nn as nn

from edge_compress.compress.archs import get_arch
from edge_compress.compress.archs.resnet_cifar import PadShortcut
from edge_compress.compress.errors import ModelLoadError
from edge_compress.compress.model_io import load_pruned, rebuild_pruned, save_pruned_bytes
from edge_compress.compress.pruning.pruner import ChannelPruner
from edge_compress.compress.pruning.structures import model_outputs, randomise, zero_out_channels
from edge_compress.export import check_parity, export_onnx, simplify_onnx, tolerance_for
from helpers_units import RESNET20_FILE, cifar_test_images, forget_module, need_shared, one_line

STREAMS = ("conv1", "layer2.0.conv2", "layer3.0.conv2")   # the first producer of each stage's stream
# stream channels to remove: both ends, the middle, and (stages 2 and 3) positions the shortcut pads with zeros
PLAN = {"conv1": [0, 3, 5, 15], "layer2.0.conv2": [0, 1, 9, 20, 31], "layer3.0.conv2": [2, 17, 40, 63]}


def _resnet20() -> nn.Module:
    torch.manual_seed(0)
    model = get_arch("resnet20").factory()
    randomise(model)
    return model.eval()


@pytest.fixture(scope="module")
def analysed() -> ChannelPruner:
    """ResNet-20 with random weights, its groups analysed once (a trial per group is the slow part)."""
    return ChannelPruner(_resnet20(), torch.randn(4, 3, 32, 32))


def _fresh(analysed: ChannelPruner) -> tuple[nn.Module, torch.Tensor, ChannelPruner]:
    model = copy.deepcopy(analysed.model)
    return model, analysed.example_input, analysed.for_copy(model)


def _stream_group(pruner: ChannelPruner, layer: str):
    return next(g for g in pruner.groups.values() if layer in g.members)


def _prune_dead_streams(analysed: ChannelPruner) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """On a copy: zero the PLAN's stream channels where they are produced (convs, norms, the shortcuts'
    positions), take the output, then prune them; returns the model, the input and the output before."""
    model, x, pruner = _fresh(analysed)
    for layer, idxs in PLAN.items():
        root = _stream_group(pruner, layer).root
        module = pruner._modules[root]
        handler = pruner.graph.get_pruner_of_module(module).prune_out_channels
        zero_out_channels(pruner.graph, pruner.graph.get_pruning_group(module, handler, idxs))
    reference = model_outputs(model, x)[0]
    for layer, idxs in PLAN.items():
        assert pruner.remove(_stream_group(pruner, layer).root, idxs)
    pruner.verify()
    return model, x, reference


def test_each_stream_is_a_prunable_group_with_its_shortcut(analysed):
    pruner = analysed
    stage1, stage2, stage3 = (_stream_group(pruner, s) for s in STREAMS)
    assert len({stage1.root, stage2.root, stage3.root}) == 3
    for group in (stage1, stage2, stage3):
        assert group.prunable, group.reason
    # the shortcut reads the stream before it and writes the stream after it
    assert "layer2.0.shortcut" in stage1.members and "layer2.0.shortcut" in stage2.members
    assert "layer3.0.shortcut" in stage2.members and "layer3.0.shortcut" in stage3.members
    assert (stage1.channels, stage2.channels, stage3.channels) == (16, 32, 64)


def test_dead_stream_channels_pruned_leave_the_output_unchanged(analysed):
    model, x, reference = _prune_dead_streams(analysed)
    out = model_outputs(model, x)[0]
    assert model.conv1.out_channels == 12 and model.layer2[0].conv2.out_channels == 27
    assert model.layer3[0].shortcut.out_channels == 60 and model.linear.in_features == 60
    assert not model.layer2[0].shortcut.is_contiguous_pad()
    assert float(reference.abs().max()) > 0.1
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4 * float(reference.abs().max()))


def test_the_unpruned_shortcut_is_the_original_pad():
    shortcut, x = PadShortcut(16, 8), torch.randn(2, 16, 8, 8)
    assert shortcut.is_contiguous_pad()
    torch.testing.assert_close(shortcut(x), nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8)), rtol=0, atol=0)


def test_stream_pruned_model_survives_save_and_load(tmp_path, analysed):
    model, x, _ = _prune_dead_streams(analysed)
    path = tmp_path / "model.pruned.pt"
    path.write_bytes(save_pruned_bytes(model, "resnet20", {}))
    again = load_pruned(path)
    assert again.layer2[0].shortcut.channel_map == model.layer2[0].shortcut.channel_map
    want = model_outputs(model, x)[0]
    torch.testing.assert_close(model_outputs(again, x)[0], want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize("bad", [[99] * 28, ["0"] * 28, [-2] * 28, "range(28)"])
def test_a_crafted_channel_map_is_refused_in_one_line(tmp_path, analysed, bad):
    model, _, _ = _prune_dead_streams(analysed)
    ckpt = torch.load(io.BytesIO(save_pruned_bytes(model, "resnet20", {})), weights_only=True)
    ckpt["shapes"]["layer2.0.shortcut"]["channel_map"] = bad
    with pytest.raises(ModelLoadError) as e:
        rebuild_pruned(ckpt, tmp_path / "crafted.pt")
    assert "crafted.pt" in one_line(str(e.value))


@pytest.mark.parametrize("opset", [13, 17])
def test_stream_pruned_model_exports_with_parity(tmp_path, analysed, opset):
    original = copy.deepcopy(analysed.model)
    model, x, _ = _prune_dead_streams(analysed)
    atol, rtol = tolerance_for("fp32")
    before = export_onnx(original, x[:1], tmp_path / "original.onnx", opset)
    ops = {n.op_type for n in onnx.load(str(before.path)).graph.node}
    assert "Pad" in ops and "Gather" not in ops   # unpruned: today's graph
    result = export_onnx(model, x[:1], tmp_path / "pruned.onnx", opset)
    assert "Gather" in {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert check_parity(result.path, model, x, atol, rtol).passed
    simple = simplify_onnx(result.path, tmp_path / "pruned.sim.onnx", check_n=2)
    assert check_parity(simple.path, model, x, atol, rtol).passed


USER_MODEL = '''
import torch.nn as nn
import torch.nn.functional as F


class LambdaLayer(nn.Module):
    def __init__(self, lambd):
        super().__init__()
        self.lambd = lambd

    def forward(self, x):
        return self.lambd(x)


class Block(nn.Module):
    def __init__(self, cin, planes, stride, scale):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != planes:
            self.shortcut = LambdaLayer(lambda x: scale * F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4)))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Net(nn.Module):
    def __init__(self, scale=1.0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(Block(8, 8, 1, scale), Block(8, 8, 1, scale))
        self.layer2 = nn.Sequential(Block(8, 16, 2, scale), Block(16, 16, 1, scale))
        self.linear = nn.Linear(16, 10)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer2(self.layer1(out))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))
'''


@pytest.fixture
def user_arch(tmp_path, monkeypatch):
    name = f"user_resnet_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODEL))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield f"{name}:Net"
    forget_module(name)


def _user_model(spec: str, **kwargs) -> nn.Module:
    from edge_compress.compress.model_io import resolve_arch
    torch.manual_seed(0)
    model = resolve_arch(spec, kwargs)[0]
    randomise(model)
    return model.eval()


def test_a_users_lambda_pad_shortcut_is_converted_and_pruned_exactly(tmp_path, user_arch):
    model, x = _user_model(user_arch), torch.randn(4, 3, 16, 16)
    reference = model_outputs(model, x)[0]
    pruner = ChannelPruner(model, x)
    assert pruner.converted_shortcuts == ["layer2.0.shortcut"]
    torch.testing.assert_close(model_outputs(model, x)[0], reference, rtol=0, atol=0)
    stage1, stage2 = _stream_group(pruner, "conv1"), _stream_group(pruner, "layer2.0.conv2")
    assert stage1.prunable and stage2.prunable, (stage1.reason, stage2.reason)
    assert pruner.remove(stage1.root, [1, 6]) and pruner.remove(stage2.root, [0, 7, 15])
    pruner.verify()
    path = tmp_path / "user.pruned.pt"
    path.write_bytes(save_pruned_bytes(model, user_arch, {}))
    again = load_pruned(path, arch=user_arch)
    assert isinstance(again.layer2[0].shortcut, PadShortcut)
    want = model_outputs(model, x)[0]
    torch.testing.assert_close(model_outputs(again, x)[0], want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_a_lambda_that_is_not_exactly_the_pad_is_left_unpruned_with_the_reason(user_arch):
    model, x = _user_model(user_arch, scale=0.5), torch.randn(2, 3, 16, 16)
    pruner = ChannelPruner(model, x)
    assert pruner.converted_shortcuts == []
    stage1 = _stream_group(pruner, "conv1")
    assert not stage1.prunable and stage1.reason
    assert pruner.groups["layer1.0.conv1"].prunable   # inner channels are not affected


# -- what removing stream channels does, measured without removing them (search/stream_value.py) --------------


def test_zeroed_channels_give_the_pruned_output_and_are_put_back(analysed):
    """Inside `zeroed` the model computes what it computes with those channels removed; after it, exactly the
    original parameters and shortcut maps again."""
    model, x, pruner = _fresh(analysed)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    maps = {n: list(m.channel_map) for n, m in model.named_modules() if isinstance(m, PadShortcut)}
    root = _stream_group(pruner, "layer2.0.conv2").root
    idxs = PLAN["layer2.0.conv2"]
    with pruner.zeroed(root, idxs):
        inside = model_outputs(model, x)[0]
    after = model_outputs(model, x)[0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert maps == {n: list(m.channel_map) for n, m in model.named_modules() if isinstance(m, PadShortcut)}
    pruned_model, _, pruned = _fresh(analysed)
    assert pruned.remove(_stream_group(pruned, "layer2.0.conv2").root, idxs)
    removed = model_outputs(pruned_model, x)[0]
    scale = float(removed.abs().max())
    assert torch.allclose(inside, removed, rtol=1e-4, atol=1e-4 * scale)
    assert not torch.allclose(inside, after, rtol=1e-4, atol=1e-4 * scale)   # the zeroing did something


def test_pretrained_streams_are_valued_above_one_layers_channels():
    """On the pretrained ResNet-20 and real images, each stage's stream loses more per unit of knapsack value
    than the median inner layer: its weight is above 1 (the weights never go below 1)."""
    from edge_compress.compress.criteria.registry import make_criterion
    from edge_compress.compress.model_io import load_model
    from edge_compress.compress.search.stream_value import stream_weights, streams
    model = load_model(need_shared(RESNET20_FILE), arch="resnet20").module
    x, _ = cifar_test_images(64)
    pruner = ChannelPruner(model, x[:2])
    criterion = make_criterion("l1")
    criterion.prepare(pruner.view, x, None)
    roots = streams(pruner)
    assert sorted(_stream_group(pruner, s).root for s in STREAMS) == sorted(roots)
    weights = stream_weights(pruner, criterion, x)
    assert set(weights) == set(roots)
    assert all(w > 1.0 for w in weights.values()), weights
