"""Adaptive timing (issue 21, item 2): the order-statistic interval of the median, the stop rule on synthetic
sample streams (deterministic, no clocks), the statistics' precision record, and one real short ORT run."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from edge_compress.deploy import LatencyStats, OrtRunner, StopRule, measure_interleaved
from edge_compress.deploy.runners.adaptive import MAX_RUNS, PRECISION, TIME_CAP, half_width_pct, median_interval_ranks
from edge_compress.device_profiles import ProfileError, load_profile
from edge_compress.device_profiles.schema import Measurement, parse_section
from edge_compress.export import export_onnx


def test_interval_ranks_are_the_binomial_order_statistics():
    assert median_interval_ranks(5) is None            # 2 * 0.5**5 > 5 %: no 95 % interval from 5 runs
    assert median_interval_ranks(6) == (0, 5)          # 2 / 64 <= 5 %
    assert median_interval_ranks(10) == (1, 8)         # P(B <= 1) = 11/1024 <= 2.5 % < P(B <= 2) = 56/1024


def test_interval_covers_the_median_of_a_skewed_distribution_at_its_confidence():
    rng = np.random.default_rng(0)
    true_median = 1.0   # lognormal(0, 0.5): median exp(0)
    lo, hi = median_interval_ranks(40)
    covered = [np.sort(s)[lo] <= true_median <= np.sort(s)[hi] for s in rng.lognormal(0, 0.5, size=(2000, 40))]
    assert np.mean(covered) >= 0.93


def _simulate(rule: StopRule, stream: np.ndarray, seconds_per_run: float) -> tuple[str, int]:
    """The stop rule driven by a fixed sample stream and a fake clock (seconds_per_run per run)."""
    runs = 0
    while True:
        why = rule.verdict(runs, runs * seconds_per_run, half_width_pct(stream[:runs]) if runs else None)
        if why:
            return why, runs
        runs += rule.next_block(runs)


def test_a_quiet_stream_stops_on_precision_after_min_runs():
    stream = 10.0 + np.random.default_rng(1).normal(0, 0.05, 1000)
    why, runs = _simulate(StopRule(precision_pct=1.0, min_runs=20, max_runs=400), stream, 0.01)
    assert (why, runs) == (PRECISION, 20)


def test_a_noisy_stream_stops_at_max_runs_and_a_slow_one_at_the_time_cap():
    noisy = np.random.default_rng(2).lognormal(0, 1.0, 1000)
    assert _simulate(StopRule(precision_pct=1.0, min_runs=20, max_runs=100), noisy, 0.001) == (MAX_RUNS, 100)
    why, runs = _simulate(StopRule(precision_pct=1.0, min_runs=20, max_runs=400, max_seconds=3.0), noisy, 0.1)
    assert why == TIME_CAP and runs == 30


def test_a_noisier_stream_needs_more_runs():
    rng = np.random.default_rng(3)
    rule = StopRule(precision_pct=1.0, min_runs=20, max_runs=5000, max_seconds=1e9)
    quiet = _simulate(rule, 10 + rng.normal(0, 0.2, 5000), 0.0)
    loud = _simulate(rule, 10 + rng.normal(0, 0.6, 5000), 0.0)
    assert quiet[0] == loud[0] == PRECISION and loud[1] > quiet[1]


@pytest.mark.parametrize("bad", [dict(min_runs=50, max_runs=10), dict(precision_pct=0), dict(max_seconds=0),
                                 dict(min_runs=0), dict(confidence=0.4)])
def test_bad_rules_are_refused(bad):
    with pytest.raises(ValueError):
        StopRule(**bad)


def test_profile_refuses_min_runs_above_max_runs():
    data = load_profile("host").to_dict()["measurement"]
    with pytest.raises(ProfileError, match="min_runs"):
        parse_section(Measurement, {**data, "min_runs": 500, "max_runs": 100}, "host.yaml", "measurement")


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("adaptive")
    x = torch.randn(1, 3, 16, 16)
    torch.manual_seed(0)
    export_onnx(nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)).eval(),
                x, d / "a.onnx", opset=17)
    export_onnx(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1)).eval(), x, d / "b.onnx", opset=17)
    return d / "a.onnx", d / "b.onnx", x.numpy()


def _consistent(stats: LatencyStats, rule: StopRule) -> None:
    p = stats.precision
    assert p is not None and p.adaptive and p.runs == stats.runs and p.target_pct == rule.precision_pct
    assert rule.min_runs <= stats.runs <= rule.max_runs
    assert p.low_ms <= stats.median_ms <= p.high_ms
    assert p.stopped_on in (PRECISION, MAX_RUNS, TIME_CAP)
    watched = p.ratio_half_width_pct if p.decided_by == "ratio" else p.half_width_pct
    if p.stopped_on == PRECISION:
        assert watched <= rule.precision_pct


def test_a_real_adaptive_ort_run_reports_consistent_fields(two_models):
    a, b, x = two_models
    rule = StopRule(precision_pct=2.0, min_runs=20, max_runs=200, max_seconds=20.0)
    with OrtRunner(a, threads=1) as ra, OrtRunner(b, threads=1) as rb:
        single = ra.measure({ra.input_names[0]: x}, 5, rule)
        pair = measure_interleaved([ra, rb], [{ra.input_names[0]: x}, {rb.input_names[0]: x}], 5, rule)
    _consistent(single, rule)
    assert single.precision.decided_by == "median"
    for s in pair:
        _consistent(s, rule)
        assert s.precision.decided_by == "ratio" and s.runs == pair[0].runs
    # the pair's two ratios are each other's inverse: the same pairs, read both ways
    assert pair[0].precision.ratio * pair[1].precision.ratio == pytest.approx(1.0, rel=0.05)
    again = LatencyStats.from_dict(single.to_dict())
    assert again.precision == single.precision


def test_a_fixed_count_still_reports_the_interval(two_models):
    a, _, x = two_models
    with OrtRunner(a, threads=1) as ra:
        stats = ra.measure({ra.input_names[0]: x}, 2, 30)
    p = stats.precision
    assert stats.runs == p.runs == 30 and p.stopped_on == "fixed" and not p.adaptive and p.target_pct is None
    assert p.low_ms <= stats.median_ms <= p.high_ms


def test_timing_precision_option_reaches_the_report(tmp_path):
    """--timing-precision overrides the profile's precision for the final measurement; the report records it."""
    import json

    import torch

    from edge_compress.compress.archs import get_arch
    from edge_compress.compress.cli.main import main

    torch.manual_seed(0)
    model = tmp_path / "m.pt"
    torch.save(get_arch("example-cnn").factory(width=8).state_dict(), model)
    out = tmp_path / "out"
    code = main(["--target", "host", "--arch", "example-cnn", "--arch-kwargs", '{"width": 8}', "--macs", "50%",
                 "--timing-precision", "5", "--out", str(out), "-q", str(model)])
    assert code == 0
    precision = json.loads((out / "report.json").read_text())["final"]["latency_stats"]["precision"]
    assert precision["target_pct"] == 5 and precision["adaptive"]
    assert precision["stopped_on"] in ("precision", "max_runs", "time_cap")
