"""Raspberry Pi 4 and 5: profiles whose cost model is fitted to published ONNX Runtime CPU latencies
(compress/costmodel/published.py PUBLISHED), the ImageNet architectures the fit needs, `fit-cost-model` for them,
`--write` into a file that does not exist yet, and a full CLI run for a Pi target."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from edge_compress.compress.archs import get_arch
from edge_compress.compress.costmodel.commands import main as costfit_main
from edge_compress.compress.costmodel.fit import fit_published, published_samples
from edge_compress.compress.costmodel.model import factors_from_profile, layer_costs, predict_latency_ms
from edge_compress.compress.costmodel.published import PUBLISHED, PUBLISHED_NETWORKS
from edge_compress.device_profiles import load_profile
from helpers_units import RESNET20_FILE, need_shared, one_line

PIS = ("raspberry-pi-4", "raspberry-pi-5")


def _predict(name: str, target: str) -> float:
    (sample,) = published_samples({name: 1.0})
    return predict_latency_ms(sample.costs, factors_from_profile(load_profile(target)))


# ---- the profiles ----------------------------------------------------------------------------------

@pytest.mark.parametrize("target", PIS)
def test_pi_profile_is_fitted_with_a_degree_of_freedom_and_held_out_networks(target):
    profile = load_profile(target)
    cm, f = profile.cost_model, factors_from_profile(profile)
    assert f.usable and f.fitted and cm.fitted
    assert profile.hardware.fp32_gflops.value > 0 and "FLOPs/cycle" in profile.hardware.fp32_gflops.source
    assert "published" in cm.source and "ispcojp/ai_inference_device_benchmark" in cm.fit.data
    table = PUBLISHED[target]
    assert cm.fit.samples == len(table.fitted_ms) > len(cm.fit.free_factors)  # at least one degree of freedom
    assert tuple(cm.fit.free_factors) == table.free
    held = {o.network for o in cm.fit.out_of_sample}
    assert held == set(table.held_out_ms) and not held & set(table.fitted_ms)
    assert 0 < f.compute_efficiency <= 1 and 0 < f.efficiency("depthwise") < f.compute_efficiency


@pytest.mark.parametrize("target", PIS)
def test_pi_predicts_resnet20_at_32x32(target):
    costs = layer_costs(get_arch("resnet20").factory().eval(), torch.randn(1, 3, 32, 32))
    ms = predict_latency_ms(costs, factors_from_profile(load_profile(target)))
    assert ms is not None and math.isfinite(ms) and 0.1 < ms < 100


def test_pi5_is_predicted_faster_than_pi4():
    for name in (*PUBLISHED["raspberry-pi-4"].fitted_ms, "resnet20"):
        assert _predict(name, "raspberry-pi-5") < _predict(name, "raspberry-pi-4"), name


@pytest.mark.parametrize("target,name", [(t, n) for t in PIS for n in PUBLISHED[t].fitted_ms])
def test_stored_fit_reproduces_the_published_latencies_within_its_stated_error(target, name):
    published = PUBLISHED[target].fitted_ms[name]
    error = 100 * abs(_predict(name, target) / published - 1)
    # The stored factors are rounded to 4 significant digits: allow a tenth of a percent for that.
    assert error <= load_profile(target).cost_model.fit.max_abs_error_pct + 0.1
    assert error <= 10


@pytest.mark.parametrize("target", PIS)
def test_stored_out_of_sample_errors_are_what_the_profile_predicts(target):
    for o in load_profile(target).cost_model.fit.out_of_sample:
        assert o.published_ms == PUBLISHED[target].held_out_ms[o.network]
        error = 100 * (_predict(o.network, target) / o.published_ms - 1)
        assert error == pytest.approx(o.error_pct, abs=0.3)
        assert abs(error) < 20


@pytest.mark.parametrize("target", PIS)
def test_refit_gives_the_stored_factors(target):
    result = fit_published(target)
    cm = load_profile(target).cost_model
    assert result.factors.compute_efficiency == pytest.approx(cm.compute_efficiency, rel=2e-3)
    assert result.factors.efficiency("depthwise") == pytest.approx(cm.kind_efficiency.depthwise, rel=2e-3)
    assert result.factors.layer_overhead_ms == cm.layer_overhead_ms == 0
    assert result.stats()["max_abs_error_pct"] == pytest.approx(cm.fit.max_abs_error_pct, abs=0.1)
    assert [o["network"] for o in result.out_of_sample] == list(PUBLISHED[target].held_out_ms)


def test_the_fit_does_not_depend_on_where_depthwise_efficiency_starts():
    import dataclasses

    table = PUBLISHED["raspberry-pi-4"]
    results = []
    for start in (0.005, 0.05, 0.2):
        PUBLISHED["raspberry-pi-4"] = dataclasses.replace(table, start={**table.start,
                                                                         "kind_efficiency.depthwise": start})
        try:
            results.append(fit_published("raspberry-pi-4").factors)
        finally:
            PUBLISHED["raspberry-pi-4"] = table
    for f in results[1:]:
        assert f.compute_efficiency == pytest.approx(results[0].compute_efficiency, rel=1e-3)
        assert f.efficiency("depthwise") == pytest.approx(results[0].efficiency("depthwise"), rel=1e-3)


# ---- the ImageNet architectures the fit needs ---------------------------------------------------------

@pytest.mark.parametrize("arch,kwargs,params,keys", [
    ("mobilenet_v2", {}, 3_504_872, {"features.0.0.weight", "features.0.1.running_var", "features.1.conv.0.0.weight",
                                     "features.1.conv.1.weight", "features.2.conv.0.0.weight",
                                     "features.2.conv.1.0.weight", "features.2.conv.2.weight",
                                     "features.2.conv.3.running_mean", "features.18.0.weight", "classifier.1.weight"}),
    ("mobilenet_v2", {"width_mult": 0.5}, 1_968_680, {"features.17.conv.2.weight"}),
    ("vgg13", {}, 133_047_848, {"features.0.weight", "features.22.bias", "classifier.0.weight", "classifier.3.weight",
                                "classifier.6.bias"}),
    ("shufflenet_v2_x1_0", {}, 2_278_604, {"conv1.0.weight", "stage2.0.branch1.0.weight", "stage2.0.branch2.6.bias",
                                           "stage2.1.branch2.5.weight", "stage4.3.branch2.0.weight",
                                           "conv5.1.running_var", "fc.weight"}),
])
def test_imagenet_archs_match_torchvision(arch, kwargs, params, keys):
    info = get_arch(arch)
    assert info.input_shape == (3, 224, 224) and info.num_classes == 1000
    with torch.device("meta"):
        model = info.factory(**kwargs).eval()
    assert sum(p.numel() for p in model.parameters()) == params
    assert keys <= set(model.state_dict())
    assert model(torch.zeros(1, 3, 224, 224, device="meta")).shape == (1, 1000)


def test_published_networks_have_the_expected_multiply_adds():
    macs = {s.description["arch"]: sum(c.macs for c in s.costs) / 1e6
            for s in published_samples({n: 1.0 for n in ("resnet18", "vgg13", "shufflenet_v2_x1_0",
                                                        *PUBLISHED_NETWORKS)})}
    # Published figures (torchvision / timm model cards): 1.81 G, 11.31 G, 0.15 G, 0.30 G, 0.10 G.
    expected = {"resnet18": 1814, "vgg13": 11308, "shufflenet_v2_x1_0": 145, "mobilenetv2_100": 301,
                "mobilenetv2_050": 97}
    for name, m in expected.items():
        assert macs[name] == pytest.approx(m, rel=0.01), name


def test_shufflenet_runs_for_real():
    torch.manual_seed(0)
    model = get_arch("shufflenet_v2_x1_0").factory().eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 1000) and torch.isfinite(y).all()


# ---- the fit-cost-model command -------------------------------------------------------------------

@pytest.mark.parametrize("target", PIS)
def test_fit_command_prints_the_fit_and_its_out_of_sample_errors(target, capsys):
    assert costfit_main(["fit-cost-model", "--target", target, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["free_factors"] == list(PUBLISHED[target].free)
    assert out["errors"]["samples"] == 3 and out["errors"]["max_abs_error_pct"] < 10
    assert [o["network"] for o in out["out_of_sample"]] == list(PUBLISHED[target].held_out_ms)
    assert costfit_main(["fit-cost-model", "--target", target]) == 0
    text = capsys.readouterr().out
    assert text.startswith("cost_model:") and "out_of_sample:" in text and "# out of sample: shufflenet_v2_x1_0" in text


def test_fit_command_for_a_target_without_published_numbers_says_so(capsys):
    assert costfit_main(["fit-cost-model", "--target", "jetson-orin-nano"]) == 2
    msg = one_line(capsys.readouterr().err)
    assert "raspberry-pi-4" in msg and "jetson-nano" in msg


def test_write_creates_a_complete_profile_that_loads(tmp_path, capsys):
    path = tmp_path / "sub" / "my pi.yaml"
    assert costfit_main(["fit-cost-model", "--target", "raspberry-pi-4", "--write", str(path)]) == 0
    assert path.is_file() and f"written to {path}" in capsys.readouterr().out
    mine, pi = load_profile(str(path)), load_profile("raspberry-pi-4")
    assert mine.extends == "raspberry-pi-4" and mine.name == "my-pi"
    assert mine.hardware == pi.hardware and mine.runtime == pi.runtime
    assert mine.cost_model.compute_efficiency == pytest.approx(pi.cost_model.compute_efficiency, rel=1e-3)
    assert mine.cost_model.fit.out_of_sample == pi.cost_model.fit.out_of_sample
    # a second run replaces the block it wrote
    assert costfit_main(["fit-cost-model", "--target", "raspberry-pi-4", "--write", str(path)]) == 0
    assert path.read_text().count("cost_model:") == 1


def test_write_into_a_folder_fails_at_once_in_one_line(tmp_path, capsys):
    assert costfit_main(["fit-cost-model", "--target", "host", "--samples", "4", "--write", str(tmp_path)]) == 2
    msg = one_line(capsys.readouterr().err)
    assert str(tmp_path) in msg and "folder" in msg


def test_host_fit_writes_a_new_profile_file(tmp_path, capsys):
    """The issue's case: --write names a file that does not exist yet (a few samples keep it short)."""
    path = tmp_path / "my-host.yaml"
    assert costfit_main(["fit-cost-model", "--target", "host", "--samples", "4", "--write", str(path)]) == 0
    capsys.readouterr()
    mine = load_profile(str(path))
    assert mine.extends == "host" and mine.name == "my-host" and mine.cost_model.fit.samples == 4
    f = factors_from_profile(mine)
    assert f.usable and f.fitted and mine.measurement == load_profile("host").measurement
    # the fit records this machine, so its factors are used here (not those of the machine host.yaml names)
    from edge_compress.compress.costmodel.host import fitted_here

    assert fitted_here(mine) is True


def test_a_new_file_never_inherits_fit_keys_the_block_leaves_out(tmp_path):
    """`extends:` merges key by key: host.yaml's fit.machine would survive a block without one, so such a
    file is written out in full instead."""
    import dataclasses

    from edge_compress.compress.costmodel.fit import FitResult
    from edge_compress.compress.costmodel.profile_block import cost_model_block, write_cost_model

    host = load_profile("host")
    assert host.cost_model.fit.machine is not None
    f = dataclasses.replace(factors_from_profile(host), compute_efficiency=0.42, fitted=True)
    block = cost_model_block(FitResult(f, ("compute_efficiency",), [1.0], [1.1]), "test data", "cmd", "test")
    path = tmp_path / "plain.yaml"
    write_cost_model(path, block, host)
    mine = load_profile(str(path))
    assert mine.extends is None and mine.cost_model.fit.machine is None
    assert mine.cost_model.compute_efficiency == 0.42 and mine.hardware == host.hardware
    assert mine.runtime == host.runtime and mine.measurement == host.measurement


# ---- a full run for a Pi target -------------------------------------------------------------------

def test_compress_for_raspberry_pi_4_end_to_end(tmp_path, capsys):
    from edge_compress.compress.cli import main

    weights = need_shared(RESNET20_FILE)
    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32))
    out = tmp_path / "out"
    code = main(["--target", "raspberry-pi-4", "--arch", "resnet20", "--calib", str(calib), "--macs", "50%",
                 str(weights), "--out", str(out), "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["verdict"] == "met"
    report = json.loads((out / "report.json").read_text())
    assert report["final"]["latency_kind"].startswith("predicted")
    assert 0 < report["final"]["latency_ms"] < report["original"]["latency_ms"]
    assert (out / "model.onnx").is_file()
