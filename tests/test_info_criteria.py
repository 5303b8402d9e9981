"""The information methods as pipeline criteria: scores map exactly through coupled groups (residual adds,
depthwise convs, concatenations), per-group allocation, options, bad input, and the CLI end to end."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from edge_compress.compress.search.removal import prune_to, prune_lowest
from edge_compress.compress.criteria.allocation import layer_keep_fractions
from edge_compress.compress.cli import main
from edge_compress.compress.criteria.registry import criterion_names, make_criterion
from edge_compress.compress.errors import CalibrationError, InputError
from edge_compress.compress.pruning.pruner import ChannelPruner

INFO = ["cmi", "mipp", "mi-gradient", "capacity-independence", "consumer-mi"]
DATA_CRITERIA = INFO + ["taylor"]
TINY = ["--arch", "example-cnn", "--arch-kwargs", '{"width": 8}']


class Coupled(nn.Module):
    """A residual add (two producers), a depthwise conv coupled to the stream, and a concatenation."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2a, self.bn2a = nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2b, self.bn2b = nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16)
        self.dw, self.bn3 = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16)
        self.conv4, self.bn4 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv5, self.bn5 = nn.Conv2d(24, 12, 1, bias=False), nn.BatchNorm2d(12)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        a = torch.relu(self.bn1(self.conv1(x)))
        s = torch.relu(self.bn2a(self.conv2a(a)) + self.bn2b(self.conv2b(a)))
        d = torch.relu(self.bn3(self.dw(s)))
        c = torch.cat([d, torch.relu(self.bn4(self.conv4(a)))], 1)
        return self.fc(torch.relu(self.bn5(self.conv5(c))).mean((2, 3)))


DEAD = {"stream": [3, 10], "conv4": [5]}


def _coupled_model() -> nn.Module:
    """Random weights and BN statistics; channels DEAD made exactly zero all along their coupled group."""
    torch.manual_seed(0)
    m = Coupled()
    with torch.no_grad():
        for bn in [m.bn1, m.bn2a, m.bn2b, m.bn3, m.bn4, m.bn5]:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.4)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
        for conv, bn in [(m.conv2a, m.bn2a), (m.conv2b, m.bn2b), (m.dw, m.bn3)]:
            conv.weight[DEAD["stream"]] = 0
            bn.weight[DEAD["stream"]] = 0
            bn.bias[DEAD["stream"]] = 0
        m.conv4.weight[DEAD["conv4"]] = 0
        m.bn4.weight[DEAD["conv4"]] = 0
        m.bn4.bias[DEAD["conv4"]] = 0
    return m.eval()


def _data(model, n=96, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, 16, generator=g)
    # Labels the features can carry: the quartile of each image's mean red value.
    red = x[:, 0].mean((1, 2))
    y = torch.bucketize(red, red.quantile(torch.tensor([0.25, 0.5, 0.75])))
    return x, y


@pytest.fixture(scope="module")
def coupled():
    model = _coupled_model()
    pruner_crit = make_criterion("l1")
    pruner = ChannelPruner(model, torch.randn(1, 3, 16, 16), 1, 1)
    return model, pruner


def test_the_coupled_model_has_the_groups_this_file_relies_on(coupled):
    _, pruner = coupled
    stream = pruner.groups["dw"]
    assert {"conv2a", "conv2b", "dw"} <= set(stream.members) and stream.channels == 16
    producers = {p for p, _, _ in pruner.producers(stream.root)}
    assert producers == {"conv2a", "conv2b", "dw"}
    assert pruner.groups["conv4"].prunable and pruner.groups["conv4"].channels == 8


@pytest.mark.parametrize("criterion", DATA_CRITERIA + ["l1"])
def test_dead_channels_score_lowest_through_coupled_groups(coupled, criterion):
    """Channels that are exactly zero along their whole group must be the first to go, at the right index."""
    model, base = coupled
    m = copy.deepcopy(model)
    pruner_crit = make_criterion(criterion)
    pruner = base.for_copy(m)
    x, y = _data(model)
    pruner_crit.prepare(pruner.view, x, y)
    groups = pruner._root_groups()
    by_root = dict(groups)
    stream = pruner.groups["dw"]
    for info, dead in [(stream, DEAD["stream"]), (pruner.groups["conv4"], DEAD["conv4"])]:
        s = pruner_crit.scores(pruner.view, info, by_root[info.root]).double()
        live = [i for i in range(info.channels) if i not in dead]
        assert s[dead].max() < s[live].min(), (criterion, info.root, s.tolist())


@pytest.mark.parametrize("criterion", DATA_CRITERIA)
def test_removing_the_dead_channels_leaves_the_output_unchanged(coupled, criterion):
    model, base = coupled
    m = copy.deepcopy(model)
    pruner_crit = make_criterion(criterion, {"allocate": "false"} if criterion in ("cmi", "mipp") else {})
    pruner = base.for_copy(m)
    x, y = _data(model)
    pruner_crit.prepare(pruner.view, x, y)
    stream = pruner.groups["dw"]
    for g in pruner.prunable_groups:  # only the two groups with dead channels may shrink
        if g.root not in (stream.root, "conv4"):
            g.prunable = False
    prune_to(pruner, pruner_crit, 14 / 16)           # stream 16 -> 14; conv4 8 -> round(7) = 7
    assert stream.channels == 14 and pruner.groups["conv4"].channels == 7
    assert sorted(set(range(16)) - set(stream.kept)) == DEAD["stream"]
    assert sorted(set(range(8)) - set(pruner.groups["conv4"].kept)) == DEAD["conv4"]
    with torch.no_grad():
        torch.testing.assert_close(m(x), model(x), atol=1e-5, rtol=1e-5)


def test_scores_follow_the_surviving_channels_across_rounds(coupled):
    model, base = coupled
    m = copy.deepcopy(model)
    crit = make_criterion("capacity-independence", {"weight": "none"})
    pruner = base.for_copy(m)
    x, y = _data(model)
    crit.prepare(pruner.view, x, y)
    info = pruner.groups["conv1"]
    original = crit._scores["conv1"].clone()
    prune_to(pruner, crit, 0.75)
    crit.prepare(pruner.view, x, y)   # scored once: the original scores are reused, indexed by survivors
    now = crit.scores(pruner.view, info, dict(pruner._root_groups())["conv1"]).double()
    assert len(now) == info.channels == 6
    torch.testing.assert_close(now, original[info.kept].float().double())
    assert sorted(original.argsort(descending=True)[:6].tolist()) == info.kept


def test_allocation_from_cutoffs_drives_per_group_fractions(coupled):
    model, base = coupled
    pruner_crit = make_criterion("cmi", {"cutoff": "scree"})
    pruner = base.for_copy(copy.deepcopy(model))
    x, y = _data(model)
    pruner_crit.prepare(pruner.view, x, y)
    alloc = pruner_crit.own_keep_fractions()
    assert set(alloc) == {g.root for g in pruner.prunable_groups}
    total = sum(g.original_channels for g in pruner.prunable_groups)
    own = sum(alloc[g.root] * g.original_channels for g in pruner.prunable_groups) / total
    at_own = layer_keep_fractions(pruner.prunable_groups, pruner_crit.own_keep_fractions(), own)
    for root, f in alloc.items():
        assert at_own[root] == pytest.approx(f, abs=1e-6)
    # beyond the criterion's own point every group shrinks in proportion
    half = layer_keep_fractions(pruner.prunable_groups, pruner_crit.own_keep_fractions(), own / 2)
    for root, f in alloc.items():
        assert half[root] == pytest.approx(f / 2, abs=1e-6)
    assert layer_keep_fractions(pruner.prunable_groups, pruner_crit.own_keep_fractions(), 1.0) == pytest.approx({r: 1.0 for r in alloc})


def test_cmi_details_have_a_curve_and_cutoff_per_layer(coupled):
    model, base = coupled
    crit = make_criterion("cmi")
    pruner = base.for_copy(copy.deepcopy(model))
    crit.prepare(pruner.view, *_data(model))
    details = crit.details()
    assert details["options"]["alpha"] == 2.0
    for g in pruner.prunable_groups:
        layer = details["layers"][g.root]
        assert len(layer["curve"]) == g.channels + 1 and 1 <= layer["keep"] <= g.channels
        assert sorted(layer["order"]) == list(range(g.channels))
    json.dumps(details)


# ---- options and bad input ---------------------------------------------------------------------------

def test_options_are_validated_when_the_criterion_is_built():
    with pytest.raises(InputError, match="no option 'bogus'.*alpha"):
        make_criterion("cmi", {"bogus": "1"})
    with pytest.raises(InputError, match="alpha=two.*alpha takes a number"):
        make_criterion("cmi", {"alpha": "two"})
    with pytest.raises(InputError, match="unknown cutoff 'elbow'"):
        make_criterion("cmi", {"cutoff": "elbow"})
    with pytest.raises(InputError, match="takes no --criterion-option"):
        make_criterion("l1", {"alpha": "2"})
    c = make_criterion("cmi", {"alpha": "1.01", "cutoff": "xmeans", "allocate": "no"})
    assert c.opts.alpha == 1.01 and c.opts.cutoff == "xmeans" and c.opts.allocate is False


def test_every_information_criterion_is_registered():
    assert set(INFO) <= set(criterion_names())


@pytest.mark.parametrize("criterion", INFO)
def test_too_few_samples_is_a_calibration_error(coupled, criterion):
    model, base = coupled
    pruner_crit = make_criterion(criterion)
    pruner = base.for_copy(copy.deepcopy(model))
    x, y = _data(model, n=16)
    with pytest.raises(CalibrationError, match="at least 32 calibration samples"):
        pruner_crit.prepare(pruner.view, x, y)


@pytest.mark.parametrize("criterion", ["cmi", "mi-gradient"])
def test_single_class_labels_are_refused(coupled, criterion):
    model, base = coupled
    pruner_crit = make_criterion(criterion)
    pruner = base.for_copy(copy.deepcopy(model))
    x, _ = _data(model)
    with pytest.raises(CalibrationError, match="single class"):
        pruner_crit.prepare(pruner.view, x, torch.zeros(len(x), dtype=torch.long))


def test_nan_calibration_is_refused(coupled):
    model, base = coupled
    pruner_crit = make_criterion("cmi")
    pruner = base.for_copy(copy.deepcopy(model))
    x, y = _data(model)
    x[3, 0, 0, 0] = float("nan")
    with pytest.raises(CalibrationError, match="NaN"):
        pruner_crit.prepare(pruner.view, x, y)


def test_constant_activations_give_finite_scores_and_never_empty_a_layer(coupled):
    """A model whose inputs are all identical: every activation is constant over the calibration set."""
    model, base = coupled
    for name in INFO:
        pruner_crit = make_criterion(name)
        pruner = base.for_copy(copy.deepcopy(model))
        x = torch.ones(48, 3, 16, 16)
        y = torch.arange(48) % 3
        pruner_crit.prepare(pruner.view, x, y)
        prune_to(pruner, pruner_crit, 0.0)
        assert all(g.channels >= 1 for g in pruner.groups.values()), name


# ---- end to end through the CLI ----------------------------------------------------------------------

def _cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_cmi_writes_its_curves_into_the_report(tiny_model_file, calib_file, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = _cli(["--target", "host", *TINY, "--calib", calib_file, "--macs", "60%", "--criterion", "cmi",
                              "--criterion-option", "cutoff=scree", "--criterion-option", "alpha=2",
                              "--out", out, "--json", tiny_model_file], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["pruning"]["criterion"] == "cmi"
    assert report["pruning"]["criterion_options"] == {"cutoff": "scree", "alpha": "2"}
    layers = report["pruning"]["criterion_details"]["layers"]
    assert layers and all(len(v["curve"]) == v["channels"] + 1 for v in layers.values())
    assert report["final"]["macs"] <= 0.6 * report["original"]["macs"] + 1
    scores = json.loads((out / "scores.json").read_text())
    assert scores["criterion"] == "cmi" and set(scores["layers"]) == set(layers)


@pytest.mark.parametrize("args,needle", [
    (["--criterion", "cmi"], "needs calibration data"),
    (["--criterion", "cmi", "--criterion-option", "bogus=1"], "no option 'bogus'"),
    (["--criterion", "l2", "--criterion-option", "alpha=2"], "takes no --criterion-option"),
    (["--criterion", "cmi", "--criterion-option", "alpha"], "is not KEY=VALUE"),
])
def test_cli_criterion_errors(tiny_model_file, tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    code, _, err = _cli(["--target", "host", *TINY, "--macs", "60%", *args, "--out", out, tiny_model_file], capsys)
    assert code == 2 and needle in err, err
    assert not out.exists()


def test_cli_too_few_calibration_samples(tiny_model_file, calib_file, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _cli(["--target", "host", *TINY, "--calib", calib_file, "--calib-samples", "16", "--macs", "60%",
                         "--criterion", "mipp", "--out", out, tiny_model_file], capsys)
    assert code == 2 and "at least 32 calibration samples" in err, err
    assert not out.exists()


def test_cli_single_class_calibration(tiny_model_file, tmp_path, capsys):
    from edge_compress.compress.example import make_dataset

    x, _ = make_dataset(64, seed=3)
    path = tmp_path / "one.npz"
    np.savez(path, x=x, y=np.zeros(len(x), dtype=np.int64))
    code, _, err = _cli(["--target", "host", *TINY, "--calib", path, "--macs", "60%", "--criterion", "cmi",
                         "--out", tmp_path / "out", tiny_model_file], capsys)
    assert code == 2 and "single class" in err, err


def test_list_criteria_shows_options(capsys):
    code, out, _ = _cli(["--list-criteria"], capsys)
    assert code == 0
    for name in criterion_names():
        assert name in out
    assert "cutoff=permutation" in out and "conditioning=per-layer" in out


def test_weight_based_capacity_needs_no_data(coupled):
    model, base = coupled
    crit = make_criterion("capacity-independence", {"source": "weights"})
    assert not crit.needs_data and make_criterion("capacity-independence").needs_data
    pruner = base.for_copy(copy.deepcopy(model))
    crit.prepare(pruner.view, None, None)
    stream = pruner.groups["dw"]
    s = crit.scores(pruner.view, stream, dict(pruner._root_groups())["dw"]).double()
    live = [i for i in range(stream.channels) if i not in DEAD["stream"]]
    assert s[DEAD["stream"]].max() < s[live].min()   # zero filters: no capacity, no independence


@pytest.mark.parametrize("criterion,options", [("capacity-independence", {"weight": "l1"}), ("cmi", {"weight": "l1"}),
                                               ("cmi", {"features": "pooled"})])
def test_variants_still_put_dead_channels_first(coupled, criterion, options):
    model, base = coupled
    pruner_crit = make_criterion(criterion, options)
    pruner = base.for_copy(copy.deepcopy(model))
    x, y = _data(model)
    pruner_crit.prepare(pruner.view, x, y)
    by_root = dict(pruner._root_groups())
    for info, dead in [(pruner.groups["dw"], DEAD["stream"]), (pruner.groups["conv4"], DEAD["conv4"])]:
        s = pruner_crit.scores(pruner.view, info, by_root[info.root]).double()
        live = [i for i in range(info.channels) if i not in dead]
        assert s[dead].max() < s[live].min(), (criterion, options, info.root, s.tolist())


def test_information_weighted_magnitude_is_the_product_of_layer_normalised_terms(coupled):
    model, base = coupled
    x, y = _data(model)
    plain_crit = make_criterion("capacity-independence", {"weight": "none"})
    plain = base.for_copy(copy.deepcopy(model))
    weighted_crit = make_criterion("capacity-independence", {"weight": "l1"})
    weighted = base.for_copy(copy.deepcopy(model))
    l1_crit = make_criterion("l1")
    l1 = base.for_copy(copy.deepcopy(model))
    for p, crit in ((plain, plain_crit), (weighted, weighted_crit), (l1, l1_crit)):
        crit.prepare(p.view, x, y)
    info = plain.groups["conv1"]
    s = plain_crit.scores(plain.view, info, dict(plain._root_groups())["conv1"]).double()
    w = l1_crit.scores(l1.view, info, dict(l1._root_groups())["conv1"]).double()
    got = weighted_crit.scores(weighted.view, info, dict(weighted._root_groups())["conv1"]).double()
    # The default raises the information term to 0.5 (BENCHMARKS.md, "Information criteria study").
    torch.testing.assert_close(got, (w / w.mean()) * (s / s.mean()) ** 0.5, rtol=1e-5, atol=1e-6)


def test_pooled_features_are_one_number_per_producer(coupled):
    model, base = coupled
    pruner_crit = make_criterion("cmi")
    pruner = base.for_copy(copy.deepcopy(model))
    x, _ = _data(model)
    groups = pruner.prunable_groups
    full = pruner_crit._features(pruner, groups, x)
    pooled = pruner_crit._features(pruner, groups, x, pooled=True)
    stream = pruner.groups["dw"].root
    assert pooled[stream].shape[2] == len(pruner.producers(stream)) and full[stream].shape[2] > pooled[stream].shape[2]
    first = full[stream][:, :, :16 * 16].mean(2)
    torch.testing.assert_close(pooled[stream][:, :, 0], first)


@pytest.mark.parametrize("inputs", ["calib", "calib+train", "none"])
def test_auto_picks_by_what_the_run_will_do(tiny_model_file, calib_file, tmp_path, capsys, inputs):
    """consumer-mi when the model ships as pruned, capacity-independence x L1 when recovery training follows,
    l1 without calibration data; the report says which and why."""
    out = tmp_path / "out"
    extra = {"calib": ["--calib", calib_file], "none": [],
             "calib+train": ["--calib", calib_file, "--train-data", calib_file, "--epochs", "1",
                             "--train-batch-size", "32"]}[inputs]
    code, _, err = _cli(["--target", "host", *TINY, *extra, "--macs", "70%", "--out", out, "--json", tiny_model_file],
                        capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    notes = " ".join(report.get("notes", []))
    if inputs == "calib":
        assert report["pruning"]["criterion"] == "consumer-mi"
        assert "--criterion auto used consumer-mi" in notes and "one-shot" in notes
    elif inputs == "calib+train":
        assert report["pruning"]["criterion"] == "capacity-independence"
        assert report["pruning"]["criterion_details"]["options"]["weight"] == "l1"
        assert "--criterion auto used capacity-independence" in notes and "recovery" in report["pruning"]
    else:
        assert report["pruning"]["criterion"] == "l1"
        assert "--criterion auto ranked channels by l1" in notes


def test_unknown_allocation_is_refused():
    with pytest.raises(InputError, match="allocation"):
        make_criterion("cmi", {"allocation": "greedy"})


def test_power_raises_the_information_term_of_the_weighted_score(coupled):
    model, base = coupled
    x, y = _data(model)
    arms = {k: (base.for_copy(copy.deepcopy(model)), make_criterion("capacity-independence", o))
            for k, o in {"plain": {"weight": "none"}, "p": {"power": "0.25"}, "l1": {"weight": "l1"}}.items()}
    l1 = (base.for_copy(copy.deepcopy(model)), make_criterion("l1"))
    for p, crit in [*arms.values(), l1]:
        crit.prepare(p.view, x, y)

    def score(arm):
        p, crit = arm
        info = p.groups["conv1"]
        return crit.scores(p.view, info, dict(p._root_groups())["conv1"]).double()

    s, w = score(arms["plain"]), score(l1)
    torch.testing.assert_close(score(arms["p"]), (w / w.mean()) * (s / s.mean()) ** 0.25, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(score(arms["p"]), score(arms["l1"]))
    with pytest.raises(InputError, match="power"):
        make_criterion("capacity-independence", {"power": "0"})
