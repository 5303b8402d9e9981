"""Feature capture (which tensor a layer's channels are scored on) and the MI-gradient method built on it."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from edge_compress.compress.metrics import renyi
from edge_compress.compress.metrics.features import FeatureCapture, collect_features
from edge_compress.compress.metrics.mi_gradient import mi_gradient_scores, renyi_mi

pytestmark = pytest.mark.usefixtures("one_thread")


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _randomise_bn(bn: nn.BatchNorm2d, seed: int) -> None:
    """Running statistics and affine parameters far from identity, so 'after the norm' is visible."""
    g = torch.Generator().manual_seed(seed)
    c = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
        bn.weight.copy_(torch.randn(c, generator=g))
        bn.bias.copy_(torch.randn(c, generator=g))


# -- which tensor is captured ------------------------------------------------------------------------

ACTIVATIONS = {
    "nn.ReLU": (lambda: nn.ReLU(), F.relu),
    "nn.ReLU(inplace)": (lambda: nn.ReLU(inplace=True), F.relu),
    "F.relu": (lambda: (lambda t: F.relu(t)), F.relu),
    "F.relu(inplace)": (lambda: (lambda t: F.relu(t, inplace=True)), F.relu),
    "torch.relu": (lambda: torch.relu, F.relu),
    "nn.ReLU6": (lambda: nn.ReLU6(), F.relu6),
    "nn.ReLU6(inplace)": (lambda: nn.ReLU6(inplace=True), F.relu6),
    "F.hardtanh": (lambda: (lambda t: F.hardtanh(t, -0.5, 0.5)), lambda t: F.hardtanh(t, -0.5, 0.5)),
    "nn.SiLU": (lambda: nn.SiLU(), F.silu),
    "F.silu": (lambda: F.silu, F.silu),
}


class ConvBnAct(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = act
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.act(self.bn(self.conv(x))))


@pytest.mark.parametrize("kind", list(ACTIVATIONS))
def test_conv_bn_activation_is_taken_after_the_activation(kind):
    make, reference = ACTIVATIONS[kind]
    torch.manual_seed(0)
    model = ConvBnAct(make()).eval()
    _randomise_bn(model.bn, 1)
    x = _randn(5, 3, 6, 6, seed=2)
    with torch.no_grad():
        expected = reference(model.bn(model.conv(x)))
    with FeatureCapture(model, ["conv"]) as cap:
        feat = cap.run(x)["conv"]
    assert feat.stage == "act"
    torch.testing.assert_close(feat.tensor, expected, atol=1e-6, rtol=1e-5)
    # the captured tensor is what the model consumed: the output is unchanged by the capture
    with torch.no_grad():
        torch.testing.assert_close(cap.output, model(x), atol=1e-6, rtol=1e-5)


class Residual(nn.Module):
    """conv -> bn -> (+ identity) -> relu: the conv's own output is the one before the add."""

    def __init__(self, inplace_add: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.inplace_add = inplace_add

    def forward(self, x):
        out = self.bn(self.conv(x))
        if self.inplace_add:
            out += x           # as torchvision's BasicBlock / Bottleneck write it
        else:
            out = out + x
        return F.relu(out)


@pytest.mark.parametrize("inplace_add", [False, True], ids=["out+x", "out+=x"])
def test_conv_into_residual_add_is_taken_after_its_norm(inplace_add):
    torch.manual_seed(0)
    model = Residual(inplace_add).eval()
    _randomise_bn(model.bn, 3)
    x = _randn(4, 3, 5, 5, seed=4)
    with torch.no_grad():
        expected = model.bn(model.conv(x))
    feat = collect_features(model, x, ["conv"])["conv"]
    assert feat.stage == "norm"
    torch.testing.assert_close(feat.tensor, expected, atol=1e-6, rtol=1e-5)


class ConvAct(nn.Module):
    def __init__(self, act: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = act

    def forward(self, x):
        out = self.conv(x)
        return F.relu(out) if self.act else out


@pytest.mark.parametrize("act,stage", [(True, "act"), (False, "conv")])
def test_conv_without_norm(act, stage):
    torch.manual_seed(0)
    model = ConvAct(act).eval()
    x = _randn(4, 3, 5, 5, seed=5)
    with torch.no_grad():
        expected = model.conv(x)
    expected = F.relu(expected) if act else expected
    feat = collect_features(model, x, ["conv"])["conv"]
    assert feat.stage == stage
    if not act:  # the raw conv output has negatives, so taking it after a ReLU would show
        assert float(expected.min()) < 0
    torch.testing.assert_close(feat.tensor, expected, atol=1e-6, rtol=1e-5)


def test_linear_layer_with_activation_is_captured():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 2)).eval()
    x = _randn(6, 3, 2, 2, seed=6)
    with torch.no_grad():
        expected = F.relu(model[1](x.flatten(1)))
    feat = collect_features(model, x, ["1"])["1"]
    assert feat.stage == "act"
    torch.testing.assert_close(feat.tensor, expected, atol=1e-6, rtol=1e-5)


# -- collect_features ---------------------------------------------------------------------------------

class TwoBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(5)
        self.unused = nn.Conv2d(5, 5, 1)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


def _two_blocks():
    torch.manual_seed(0)
    model = TwoBlocks()
    _randomise_bn(model.bn1, 7)
    _randomise_bn(model.bn2, 8)
    return model


def test_collect_features_concatenates_batches_in_order():
    model = _two_blocks().eval()
    x = _randn(11, 3, 5, 5, seed=9)
    small = collect_features(model, x, ["conv1", "conv2"], batch_size=3)   # 3 + 3 + 3 + 2
    big = collect_features(model, x, ["conv1", "conv2"], batch_size=64)
    with torch.no_grad():
        a1 = F.relu(model.bn1(model.conv1(x)))
        a2 = F.relu(model.bn2(model.conv2(a1)))
    for name, expected in (("conv1", a1), ("conv2", a2)):
        assert small[name].tensor.shape == expected.shape
        assert small[name].stage == big[name].stage == "act"
        torch.testing.assert_close(small[name].tensor, big[name].tensor, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(small[name].tensor, expected, atol=1e-6, rtol=1e-5)
    # order: sample 7 of the batched run is sample 7 of the model, not of some other batch
    with torch.no_grad():
        one = F.relu(model.bn1(model.conv1(x[7:8])))
    torch.testing.assert_close(small["conv1"].tensor[7:8], one, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_collect_features_restores_mode_and_runs_in_eval(training):
    model = _two_blocks().train(training)
    stats = model.bn1.running_mean.clone()
    x = _randn(8, 3, 5, 5, seed=10)
    feats = collect_features(model, x, ["conv1"], batch_size=4)
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    # eval mode inside: BatchNorm used (and did not update) its running statistics
    assert torch.equal(model.bn1.running_mean, stats)
    with torch.no_grad():
        model.eval()
        expected = F.relu(model.bn1(model.conv1(x)))
    torch.testing.assert_close(feats["conv1"].tensor, expected, atol=1e-6, rtol=1e-5)


def test_collect_features_bad_layers():
    model = _two_blocks().eval()
    x = _randn(4, 3, 5, 5, seed=11)
    with pytest.raises(KeyError, match="nope"):
        collect_features(model, x, ["conv1", "nope"])
    with pytest.raises(RuntimeError, match="unused"):
        collect_features(model, x, ["conv1", "unused"])
    assert not model.training


# -- MI gradient ------------------------------------------------------------------------------------

def test_renyi_mi_is_differentiable_and_non_negative():
    y = torch.arange(30) % 3
    ky = renyi.label_gram(y)
    for seed in range(3):
        x = torch.randn(30, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        x = (x + 1.5 * y.unsqueeze(1).double() * (seed > 0)).requires_grad_(True)
        mi = renyi_mi(x, ky)
        assert float(mi.detach()) >= 0.0
        (grad,) = torch.autograd.grad(mi, x)
        assert torch.isfinite(grad).all() and float(grad.abs().sum()) > 0
    # the gradient is the gradient of the MI at the fixed (detached) kernel width: a finite-difference check
    x = torch.randn(12, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ky = renyi.label_gram(torch.arange(12) % 2)
    sigma = renyi.median_sigma(renyi.sq_distances(x))

    def mi_fixed(v):
        kx = renyi.gram_from_sq_dist(renyi.sq_distances(v), sigma)
        return renyi.entropy(kx) + renyi.entropy(ky) - renyi.entropy(kx * ky)

    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(renyi_mi(xg, ky), xg)
    (grad_fixed,) = torch.autograd.grad(mi_fixed(xg), xg)
    torch.testing.assert_close(grad, grad_fixed, atol=1e-10, rtol=1e-8)
    assert torch.autograd.gradcheck(mi_fixed, (x.clone().requires_grad_(True),))
    assert float(renyi_mi(x, ky)) == pytest.approx(float(mi_fixed(x)), abs=1e-12)


class LabelWired(nn.Module):
    """conv channel 0 reads the input channel that encodes the label, channel 1 is dead, channel 2 reads noise."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[0, 0, 1, 1] = 1.0
            self.conv.weight[2, 1, 1, 1] = 1.0
        self.fc = nn.Linear(3, classes)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


def _label_data(n=40, classes=4):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, classes, (n,), generator=g)
    x = 0.1 * torch.randn(n, 2, 4, 4, generator=g)
    x[:, 0] += y.float().view(n, 1, 1) + 0.5
    return x, y


@pytest.mark.parametrize("target", ["output", "layer"])
def test_mi_gradient_ranks_label_channel_above_dead_one(target):
    x, y = _label_data()
    torch.manual_seed(0)
    model = LabelWired().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for p in model.parameters():  # stale gradients from an earlier step are cleared, not accumulated into
        p.grad = torch.ones_like(p)
    scores = mi_gradient_scores(model, x, lambda idx: renyi.label_gram(y[idx]), ["conv"], target=target,
                                batch_size=16)["conv"]
    assert scores.shape == (3,) and scores.dtype == torch.float64
    assert float(scores[1]) == 0.0                    # dead channel: a = 0 everywhere
    assert float(scores[0]) > 0.0
    assert float(scores[0]) > 10 * float(scores[2])   # the label channel beats the noise channel
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert model.training  # the mode is restored


def test_mi_gradient_bad_input():
    x, y = _label_data()
    model = LabelWired().eval()

    def gram(idx):
        return renyi.label_gram(y[idx])

    with pytest.raises(ValueError, match="sideways"):
        mi_gradient_scores(model, x, gram, ["conv"], target="sideways")
    with pytest.raises(ValueError, match="4"):
        mi_gradient_scores(model, x[:3], gram, ["conv"])
    with pytest.raises(KeyError, match="nope"):
        mi_gradient_scores(model, x, gram, ["nope"])
