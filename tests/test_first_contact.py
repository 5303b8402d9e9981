"""What a new user meets first: the help lists every subcommand, the built-in architectures are listed,
an own architecture runs without --input-shape when the data has the shape, `validate` measures without
a budget, the summary is one line for people, SIGTERM and a closed pipe end cleanly, and the host cost
model says on which CPU it was fitted."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_compress.compress.cli import COMMANDS, main
from edge_compress.compress.report.summary import summary_line


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_subcommand_and_each_has_its_own_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("validate", "report", "example", "fit-cost-model", "cost-model"):
        assert name in COMMANDS and f"  {name} " in out, name
    assert "--list-archs" in out
    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_list_archs_names_the_builtins_with_their_input_shape(capsys):
    code, out, _ = run_cli(["--list-archs", "--json"], capsys)
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    for name in ("resnet18", "resnet50", "resnet20", "resnet56", "example-cnn"):
        assert name in rows
    assert rows["resnet18"]["input_shape"] == [3, 224, 224] and rows["resnet20"]["input_shape"] == [3, 32, 32]
    code, out, _ = run_cli(["--list-archs"], capsys)
    assert code == 0 and "resnet18" in out and "package.module:callable" in out


@pytest.fixture
def own_arch(tmp_path, monkeypatch):
    """A user's own architecture (`--arch userpkg_fc.nets:build`), importable from tmp_path."""
    pkg = tmp_path / "userpkg_fc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent("""
        import torch.nn as nn

        def build(num_classes=4):
            return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    from userpkg_fc.nets import build

    torch.manual_seed(0)
    model_path = tmp_path / "own.pt"
    torch.save(build().state_dict(), model_path)
    return model_path


def test_own_arch_takes_the_input_shape_from_nchw_calibration_data(own_arch, tmp_path, capsys):
    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((40, 3, 20, 20)).astype(np.float32))
    out = tmp_path / "out"
    code, stdout, err = run_cli(["--target", "jetson-nano", "--arch", "userpkg_fc.nets:build", "--calib", calib,
                                 "--macs", "60%", "--out", out, "--json", own_arch], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"]["input_shape"] == [1, 3, 20, 20]   # batch from the profile, the rest from the data


def test_own_arch_takes_the_shape_from_uint8_nhwc_images_and_says_how_it_normalised(own_arch, tmp_path, capsys):
    calib = tmp_path / "c.npz"
    images = np.random.default_rng(0).integers(0, 256, (40, 18, 22, 3), dtype=np.uint8)
    np.savez(calib, x=images, y=np.arange(40) % 4)
    out = tmp_path / "out"
    code, _, err = run_cli(["--target", "jetson-nano", "--arch", "userpkg_fc.nets:build", "--calib", calib,
                            "--macs", "60%", "--out", out, own_arch], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"]["input_shape"] == [1, 3, 18, 22]
    assert "/ 255 only" in err and any("/ 255 only" in n for n in report["notes"])


def test_own_arch_without_shape_or_data_asks_for_either(own_arch, capsys):
    code, _, err = run_cli(["--target", "jetson-nano", "--arch", "userpkg_fc.nets:build", "--macs", "60%",
                            own_arch], capsys)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("compress: error:")]
    assert len(errors) == 1 and "--input-shape" in errors[0] and "--calib" in errors[0]


def test_mean_with_the_wrong_number_of_values_is_an_input_error(own_arch, tmp_path, capsys):
    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8))
    code, _, err = run_cli(["--target", "jetson-nano", "--arch", "userpkg_fc.nets:build", "--calib", calib,
                            "--mean", "0.5,0.5", "--std", "0.2,0.2", "--macs", "60%", own_arch], capsys)
    assert code == 2 and "--mean" in err


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 10))
    torch.onnx.export(m.eval(), torch.randn(1, 3, 16, 16), str(path), dynamo=False, opset_version=17)
    return path


def test_validate_without_a_budget_is_a_measured_report(onnx_model, tmp_path, capsys):
    out = tmp_path / "v"
    code, stdout, err = run_cli(["validate", onnx_model, "--target", "host", "--out", out], capsys)
    assert code == 0, err
    assert stdout.startswith("MEASURED: latency ")
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "no-budget" and report["budget"] == {}
    assert report["final"]["latency_kind"].startswith("measured")
    # weights (15.9 k params) + the largest activation pair: more than the weights alone, as in compress
    weights_mb = (8 * 3 * 9 + 8 + 8 * 14 * 14 * 10 + 10) * 4 / 2**20
    assert report["final"]["memory_mb"] > weights_mb
    from edge_compress.compress.report.schema import validate_report
    validate_report(report)


def test_validate_memory_budget_counts_activations(onnx_model, tmp_path, capsys):
    weights_mb = (8 * 3 * 9 + 8 + 8 * 14 * 14 * 10 + 10) * 4 / 2**20
    code, _, err = run_cli(["validate", onnx_model, "--target", "host", "--memory-mb", f"{weights_mb * 1.01:.6f}",
                            "--out", tmp_path / "v"], capsys)
    assert code == 1, err   # the weights alone fit; with the activations the model does not


def test_validate_refuses_a_huge_input_before_allocating(onnx_model, tmp_path, capsys):
    code, _, err = run_cli(["validate", onnx_model, "--target", "host", "--input-shape", "1x3x100000x100000",
                            "--out", tmp_path / "v"], capsys)
    assert code == 2 and "GiB" in err and not (tmp_path / "v").exists()


def test_summary_line_is_for_people():
    original = {"latency_ms": 2.0, "latency_kind": "predicted: cost model", "macs": 59_280_384, "params": 270_000}
    final = {"latency_ms": 1.25, "latency_kind": "predicted: cost model", "macs": 29_640_192, "params": 135_000}
    line = summary_line("met", original, final, {"latency_ms": 1.3},
                        {"accuracy": {"evaluated": True, "samples": 256, "top1_original": 0.9, "top1_final": 0.85}})
    assert line.startswith("MET (predicted): latency 2 ms -> 1.25 ms predicted (1.60x faster)")
    assert "MACs 59.3 M -> 29.6 M" in line and "budget latency <= 1.3 ms" in line and "90.0% -> 85.0%" in line
    assert "{" not in line   # no Python reprs
    slower = summary_line("met", original, {**final, "latency_ms": 2.5}, {"macs": 3e7},
                          {"export": {"quantization": {"format": "QDQ"}}})
    assert slower.startswith("MET: ") and "SLOWER" in slower and "INT8 model vs FP32 original" in slower


def test_list_criteria_into_a_closed_pipe_ends_quietly():
    proc = subprocess.run(f"{sys.executable} -m edge_compress --list-criteria | head -1", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and "internal error" not in proc.stderr


def test_sigterm_unwinds_without_leaving_output(tiny_model_file, calib_file, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "edge_compress", "--target", "host", "--arch", "example-cnn",
                             "--arch-kwargs", '{"width": 8}', "--calib", str(calib_file), "--macs", "50%",
                             "--out", str(out), str(tiny_model_file)], stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    # Wait until the run has started its real work (the first log line), then terminate it.
    first = proc.stderr.readline()
    assert first, "the run printed nothing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:   # it finished before the signal arrived: nothing to check
        pytest.skip("the run completed before SIGTERM was delivered")
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_host_fit_is_compared_with_this_cpu():
    from edge_compress.device_profiles import load_profile
    from edge_compress.device_profiles.schema import FitMachine

    from edge_compress.compress.costmodel.host import fitted_here, same_machine

    here = {"cpu": "AMD EPYC 7B13 64-Core Processor", "isa": "avx512", "cores": 2}
    assert same_machine(FitMachine(cpu="AMD EPYC", isa="avx512", cores=2), here)
    assert not same_machine(FitMachine(cpu="AMD EPYC", isa="avx2", cores=2), here)
    assert not same_machine(FitMachine(cpu="Intel(R) Xeon(R)", isa="avx512", cores=2), here)
    assert not same_machine(FitMachine(cpu="AMD EPYC", isa="avx512", cores=4), here)
    assert not same_machine(None, here)
    assert fitted_here(load_profile("jetson-nano")) is None   # predicted targets are not this machine's
    assert fitted_here(load_profile("host")) in (True, False)


def test_host_profile_on_another_cpu_is_labelled_not_fitted(monkeypatch):
    from edge_compress.device_profiles import load_profile
    from edge_compress.device_profiles.schema import FitMachine

    from edge_compress.compress.costmodel import host as host_fit

    profile = load_profile("host")
    other = profile.model_copy(update={"cost_model": profile.cost_model.model_copy(update={
        "fit": profile.cost_model.fit.model_copy(update={
            "machine": FitMachine(cpu="Some Other CPU", isa="sse4.2", cores=64)})})})
    adapted, note = host_fit.for_this_machine(other)
    assert adapted.cost_model.fitted is False and adapted.cost_model.fit is None
    assert "NOT fitted on this machine" in adapted.cost_model.source and "Some Other CPU" in note
    assert adapted.cost_model.reference_gflops.confidence == "measured" and adapted.cost_model.reference_gflops.value > 0


def _on_another_cpu(profile):
    from edge_compress.device_profiles.schema import FitMachine

    return profile.model_copy(update={"cost_model": profile.cost_model.model_copy(update={
        "fit": profile.cost_model.fit.model_copy(update={
            "machine": FitMachine(cpu="Some Other CPU", isa="sse4.2", cores=64)})})})


def test_host_cost_model_from_another_cpu_is_fitted_here_once_and_cached(tmp_path, monkeypatch):
    """A latency budget on a CPU the host fit is not from: the cost model is fitted here (real measurements), cached,
    and the next run reads the cache instead of fitting again."""
    from edge_compress.deploy import cpu_fingerprint
    from edge_compress.device_profiles import load_profile

    from edge_compress.compress.costmodel import fit, host as host_fit

    other = _on_another_cpu(load_profile("host"))
    assert host_fit.fitted_here(other) is False
    fitted, note = host_fit.fitted_for_this_machine(other, folder=tmp_path)
    cm = fitted.cost_model
    assert cm.fitted and host_fit.same_machine(cm.fit.machine, cpu_fingerprint()) and host_fit.fitted_here(fitted)
    assert cm.fit.samples == host_fit.FIT_SAMPLES and cm.reference_gflops.confidence == "measured"
    assert 0 < cm.compute_efficiency <= 1 and cm.layer_overhead_ms >= 0
    cached = host_fit.cache_path(other, tmp_path)
    assert cached.is_file() and "fitted here" in note and str(cached) in note and "Some Other CPU" in note

    def no_fit(*args, **kwargs):
        raise AssertionError("fitted again although the cache holds this CPU's fit")

    monkeypatch.setattr(fit, "fit_for_target", no_fit)
    again, note = host_fit.fitted_for_this_machine(other, folder=tmp_path)
    assert again.cost_model == cm and "read from the cache" in note
    # the same CPU with other measurement settings is another fit
    assert host_fit.cache_path(other.model_copy(update={"measurement": other.measurement.model_copy(
        update={"threads": 2})}), tmp_path) != cached


def test_a_cached_cost_model_is_data_checked_before_use(tmp_path):
    """The cache file is the user's disk: anything but a valid cost model fitted on this CPU is refused with the
    reason (and refitted by the caller), and YAML tags that would construct objects are not honoured."""
    from edge_compress.deploy import cpu_fingerprint

    from edge_compress.compress.costmodel.host import _read_cached

    here, path = cpu_fingerprint(), tmp_path / "c.yaml"
    assert _read_cached(path, here) == (None, None)
    for data in (b"cost_model: [1, 2", b"cost_model: !!python/object/apply:os.system ['touch pwned']\n",
                 b"just text", b"cost_model:\n  compute_efficiency: 7\n", b"\xff\xfe"):
        path.write_bytes(data)
        cm, why = _read_cached(path, here)
        assert cm is None and why, data
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    block = load_host_block()
    path.write_text(block, encoding="utf-8")   # valid, but fitted on another CPU
    assert _read_cached(path, {"cpu": "Some Other CPU", "isa": "sse4.2", "cores": 64}) == (
        None, "it was not fitted on this CPU")


def test_the_cost_model_is_fitted_only_where_it_prices_a_latency_budget(tiny_model_file, tmp_path):
    """A MACs budget, or --no-cost-fit, keeps the profile's factors with re-measured reference rates (seconds), labelled
    as not fitted here; a latency budget fits (the test above)."""
    from dataclasses import replace

    from edge_compress.compress.config import CompressConfig
    from edge_compress.compress.passes import load

    for options in ({"macs": "50%"}, {"speedup": 1.5, "no_cost_fit": True}):
        config = CompressConfig.from_keywords(model=str(tiny_model_file), target="host", arch="example-cnn",
                                              arch_kwargs={"width": 8}, out=str(tmp_path / "out"), **options)
        plan = load.plan(config)
        plan = replace(plan, profile=_on_another_cpu(plan.profile))
        adapted = load.on_this_machine(config, plan, load.load(config, plan))
        assert adapted.profile.cost_model.fitted is False, options
        assert any("re-measured here" in n and "Some Other CPU" in n for n in adapted.notes), options
    assert not (tmp_path / "out").exists()


def load_host_block() -> str:
    """The built-in host profile's cost_model block, as text."""
    import yaml
    from edge_compress.device_profiles.loader import BUILTIN_DIR

    data = yaml.safe_load((BUILTIN_DIR / "host.yaml").read_text(encoding="utf-8"))
    return yaml.safe_dump({"cost_model": data["cost_model"]})


def test_help_is_generated_from_the_configs_and_api_keywords_are_the_long_options(capsys):
    """Every option of every pass's config is on the command line under the name the Python API takes."""
    from edge_compress.compress.config import CompressConfig, extra_of, leaves

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for _, keyword, info, group in leaves(CompressConfig):
        if extra_of(info).get("cli", True) and not extra_of(info).get("positional"):
            assert f"--{keyword.replace('_', '-')}" in out and group.split(" (")[0] in out, keyword


def test_unknown_keys_are_input_errors_naming_them(tmp_path, capsys):
    from edge_compress.compress import compress
    from edge_compress.compress.config import RecoveryOptions
    from edge_compress.compress.errors import InputError

    with pytest.raises(InputError, match="'lattency_ms'"):
        compress(tmp_path / "m.pt", target="host", lattency_ms=2)
    with pytest.raises(InputError, match="'epoch'"):
        RecoveryOptions(epoch=2)
    code, _, err = run_cli(["--target", "jetson-nano", "--criterion", "l1", "--criterion-option", "nosuch=1",
                            "--macs", "50%", tmp_path / "m.pt"], capsys)
    errors = [line for line in err.strip().splitlines() if not line.startswith("[compress]")]
    assert code == 2 and len(errors) == 1 and "nosuch" in errors[0]
    assert not list(tmp_path.iterdir())
