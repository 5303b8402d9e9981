"""trtexec log parser against the real logs in ../shared/fixtures/trtexec.

Expected values are typed in by hand from the files, not re-parsed, so that a regex mistake
cannot agree with itself.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge_compress.deploy.errors import DeployError
from edge_compress.deploy.runners.stats import LatencyStats
from edge_compress.deploy.runners.trtexec_log import (
    Distribution,
    TraceAverage,
    decode_version_code,
    parse_trtexec_log,
    stats_from_trtexec,
    trtexec_latency_dict,
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "trtexec"
_ALL_LOGS = sorted(FIXTURES.glob("*.log")) if FIXTURES.is_dir() else []


def D(mn, mx, mean, median, **pct):  # noqa: N802 - reads like the log line
    return Distribution(min=mn, max=mx, mean=mean, median=median, percentiles={k[1:]: v for k, v in pct.items()})


EXPECTED = {
    "jetson-nano-trt8201-summary.log": dict(
        version=(8, 2, 1),
        version_code=8201,
        build=None,
        status="PASSED",
        command="/usr/src/tensorrt/bin/trtexec --onnx=best.onnx --saveEngine=here.engine --best",
        options={"onnx": "best.onnx", "saveEngine": "here.engine", "best": True},
        precision_flags=("best",),
        device=None,
        throughput_qps=72.2544,
        metrics={
            "latency": D(13.7075, 14.8861, 13.8259, 13.7999, p99=14.8121),
            "end_to_end_host_latency": D(13.7175, 14.9229, 13.8394, 13.8109, p99=14.831),
            "enqueue_time": D(6.08826, 9.51123, 7.35561, 7.19287, p99=9.49573),
            "h2d_latency": D(0.117554, 0.13623, 0.120202, 0.119202, p99=0.128906),
            "gpu_compute_time": D(13.5784, 14.7576, 13.6963, 13.6698, p99=14.6803),
            "d2h_latency": D(0.00830078, 0.0100708, 0.00940053, 0.00939941, p99=0.0100098),
        },
        total_host_walltime_s=3.03096,
        total_gpu_compute_time_s=2.99948,
        gpu_compute_cv_percent=None,
        trace=(),
        trace_window=None,
        warnings=(),
        format_hint="<8.4",
        iterations=219,
    ),
    "desktop-trt8-tf32-with-trace.log": dict(
        version=None,
        version_code=None,
        build=None,
        status=None,
        command=None,
        options={},
        precision_flags=(),
        device=None,
        throughput_qps=28.9757,
        metrics={
            "latency": D(34.6697, 36.1511, 35.0057, 34.916, p99=36.1511),
            "end_to_end_host_latency": D(34.6746, 36.156, 35.0105, 34.9216, p99=36.156),
            "enqueue_time": D(34.2643, 35.6603, 34.4884, 34.4119, p99=35.6603),
            "h2d_latency": D(0.788696, 1.17773, 0.828755, 0.80957, p99=1.17773),
            "gpu_compute_time": D(33.4643, 34.8665, 33.664, 33.5995, p99=34.8665),
            "d2h_latency": D(0.289551, 0.793457, 0.512931, 0.497314, p99=0.793457),
        },
        total_host_walltime_s=3.07153,
        total_gpu_compute_time_s=2.9961,
        gpu_compute_cv_percent=None,
        trace=(
            TraceAverage(10, 33.8371, 35.1268, 35.1314, 34.6321),
            TraceAverage(10, 33.5586, 34.8392, 34.8435, 34.35),
            TraceAverage(10, 33.717, 35.0445, 35.0494, 34.5316),
            TraceAverage(10, 33.6805, 34.978, 34.9823, 34.4815),
            TraceAverage(10, 33.5955, 34.8849, 34.8894, 34.3928),
            TraceAverage(10, 33.6902, 35.0375, 35.0424, 34.5155),
            TraceAverage(10, 33.6041, 35.0108, 35.016, 34.4454),
            TraceAverage(10, 33.6895, 35.1783, 35.1835, 34.6011),
        ),
        trace_window=10,
        warnings=(
            "* Throughput may be bound by Enqueue Time rather than GPU Compute and the GPU may be "
            "under-utilized. If not already in use, --useCudaGraph (utilize CUDA graphs where "
            "possible) may increase the throughput.",
        ),
        format_hint="<8.4",
        iterations=89,
    ),
    "desktop-trt10900-resnet50-summary.log": dict(
        version=(10, 9, 0),
        version_code=100900,
        build="b34",
        status="PASSED",
        command="trtexec --onnx=resnet50/model.onnx --saveEngine=resnet50/model.trt",
        options={"onnx": "resnet50/model.onnx", "saveEngine": "resnet50/model.trt"},
        precision_flags=(),
        device=None,
        throughput_qps=691.435,
        metrics={
            "latency": D(1.4209, 3.047, 1.48372, 1.43823, p90=1.45624, p95=1.71796, p99=2.61597),
            "enqueue_time": D(0.208801, 0.461304, 0.263621, 0.259033, p90=0.293823, p95=0.311768, p99=0.402832),
            "h2d_latency": D(0.0258789, 0.0687256, 0.0362824, 0.0361328, p90=0.0378418, p95=0.0385742, p99=0.0616455),
            "gpu_compute_time": D(1.38855, 3.00439, 1.44357, 1.39775, p90=1.40308, p95=1.67834, p99=2.57642),
            "d2h_latency": D(
                0.00286865, 0.00561523, 0.00387057, 0.00366211, p90=0.00488281, p95=0.00500488, p99=0.00537109
            ),
        },
        total_host_walltime_s=3.0039,
        total_gpu_compute_time_s=2.9983,
        gpu_compute_cv_percent=13.1794,
        trace=(
            TraceAverage(10, 1.39883, 1.43892, None, 0.244702),
            TraceAverage(10, 1.39878, 1.43972, None, 0.261963),
        ),
        trace_window=None,
        warnings=(
            "* GPU compute time is unstable, with coefficient of variance = 13.1794%. If not already "
            "in use, locking GPU clock frequency or adding --useSpinWait may improve the stability.",
        ),
        format_hint=">=8.5",
        iterations=2077,
    ),
}

needs_fixtures = pytest.mark.skipif(not _ALL_LOGS, reason=f"shared trtexec fixtures not found at {FIXTURES}")


@needs_fixtures
def test_every_fixture_has_expected_values():
    # A new fixture without hand-written expectations must fail here, not be skipped silently.
    assert sorted(p.name for p in _ALL_LOGS) == sorted(EXPECTED)


@needs_fixtures
@pytest.mark.parametrize("path", _ALL_LOGS, ids=lambda p: p.name)
def test_fixture_numbers_equal_the_file(path):
    result = parse_trtexec_log(path.read_text())
    expected = EXPECTED[path.name]
    for name, value in expected.items():
        assert getattr(result, name) == value, name
    assert set(result.metrics) == set(expected["metrics"])
    assert result.sections == {}
    # Every returned number also appears verbatim in the file (guards against a rescaled value).
    text = path.read_text()
    for dist in result.metrics.values():
        for number in (dist.min, dist.max, dist.mean, dist.median, *dist.percentiles.values()):
            assert f"= {number:g} ms" in text


@needs_fixtures
@pytest.mark.parametrize("path", _ALL_LOGS, ids=lambda p: p.name)
def test_fixture_without_summary_raises(path):
    lines = path.read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if "=== Performance summary ===" in line)
    with pytest.raises(DeployError) as info:
        parse_trtexec_log("\n".join(lines[:cut]))
    assert str(info.value) == (
        "no 'Performance summary' in the trtexec output: the run failed or was cut off; see the log"
    )
    with pytest.raises(DeployError, match=r"incomplete 'Performance summary'.*no 'Latency' line"):
        parse_trtexec_log("\n".join(lines[: cut + 2]))


@needs_fixtures
@pytest.mark.parametrize("path", _ALL_LOGS, ids=lambda p: p.name)
def test_fixture_to_dict_and_latency_dict(path):
    result = parse_trtexec_log(path.read_text())
    data = result.to_dict()
    assert data["throughput_qps"] == EXPECTED[path.name]["throughput_qps"]
    assert data["iterations"] == EXPECTED[path.name]["iterations"]
    lat = trtexec_latency_dict(result, batch_size=2, where="jetson")
    assert set(lat) == {f.name for f in dataclasses.fields(LatencyStats)}
    dist = EXPECTED[path.name]["metrics"]["latency"]
    assert (lat["median_ms"], lat["mean_ms"], lat["min_ms"], lat["max_ms"]) == (
        dist.median,
        dist.mean,
        dist.min,
        dist.max,
    )
    assert lat["p99_ms"] == dist.percentiles["99"]
    assert lat["throughput_ips"] == pytest.approx(2 * 1000.0 / dist.mean)
    assert lat["runs"] == EXPECTED[path.name]["iterations"]


@pytest.mark.parametrize(
    "text",
    ["", "hello world\n\x00\x01 binary junk", "&&&& FAILED TensorRT.trtexec [TensorRT v8201] # trtexec --onnx=x"],
)
def test_garbage_raises(text):
    with pytest.raises(DeployError, match="no 'Performance summary'"):
        parse_trtexec_log(text)


def test_non_text_is_a_type_error():
    with pytest.raises(TypeError):
        parse_trtexec_log(b"bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "version"),
    [(8201, (8, 2, 1)), (8601, (8, 6, 1)), (7103, (7, 1, 3)), (100900, (10, 9, 0)), (100300, (10, 3, 0))],
)
def test_decode_version_code(code, version):
    assert decode_version_code(code) == version


_SYNTHETIC = """\
&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec --onnx=m.onnx --fp16 --int8 --memPoolSize=workspace:1024,dlaSRAM:1 --shapes=input:1x3x224x224
[01/02/2024-10:00:00] [I] === Device Information ===
[01/02/2024-10:00:00] [I] Selected Device: Orin
[01/02/2024-10:00:00] [I] Compute Capability: 8.7
[01/02/2024-10:00:00] [I] TensorRT version: 8.6.1
[01/02/2024-10:00:00] [I] === Performance summary ===
[01/02/2024-10:00:00] [I] Throughput: 100 qps
[01/02/2024-10:00:00] [I] Latency: min = 9 ms, max = 11 ms, mean = 10 ms, median = 10 ms, percentile(90%) = 10.5 ms, percentile(95%) = 10.7 ms, percentile(99.9%) = 1.1e+01 ms
[01/02/2024-10:00:00] [I] Total Host Walltime: 3 s
&&&& PASSED TensorRT.trtexec [TensorRT v8601] # trtexec --onnx=m.onnx --fp16 --int8 --memPoolSize=workspace:1024,dlaSRAM:1 --shapes=input:1x3x224x224
"""


def test_synthetic_full_log_options_device_and_version():
    result = parse_trtexec_log(_SYNTHETIC)
    assert result.version == (8, 6, 1) and result.status == "PASSED"
    assert result.device == "Orin"
    assert result.sections["Device Information"]["Compute Capability"] == "8.7"
    assert result.precision_flags == ("fp16", "int8")
    assert result.workspace == "1024"
    assert result.options["shapes"] == "input:1x3x224x224"
    assert result.metrics["latency"].percentiles == {"90": 10.5, "95": 10.7, "99.9": 11.0}
    assert result.iterations == 300
    with pytest.raises(DeployError, match=r"p99_ms"):
        stats_from_trtexec(result)


def test_workspace_flag_before_84():
    text = _SYNTHETIC.replace("v8601", "v8201").replace("8.6.1", "8.2.1")
    text = text.replace("--memPoolSize=workspace:1024,dlaSRAM:1", "--workspace=512")
    assert parse_trtexec_log(text).workspace == "512"


def test_version_line_contradicting_banner_raises():
    with pytest.raises(DeployError, match="contradicts itself"):
        parse_trtexec_log(_SYNTHETIC.replace("TensorRT version: 8.6.1", "TensorRT version: 8.5.3"))


def test_unexpected_unit_raises():
    with pytest.raises(DeployError, match="unexpected unit 'us'"):
        parse_trtexec_log(_SYNTHETIC.replace("min = 9 ms", "min = 9 us"))


@needs_fixtures
def test_stats_from_trtexec_10x_gpu_compute():
    result = parse_trtexec_log((FIXTURES / "desktop-trt10900-resnet50-summary.log").read_text())
    stats = stats_from_trtexec(result, metric="gpu_compute_time", where="desktop", warmup_runs=0)
    assert isinstance(stats, LatencyStats)
    assert (stats.median_ms, stats.p90_ms, stats.p95_ms, stats.p99_ms) == (1.39775, 1.40308, 1.67834, 2.57642)
    assert stats.std_ms == pytest.approx(0.131794 * 1.44357)
    assert stats.runs == 2077 and stats.runtime == "tensorrt 10.9.0"
    # The Latency line has no std in the log: the caller must supply one, or get a clear error.
    with pytest.raises(DeployError, match=r"\['std_ms'\]"):
        stats_from_trtexec(result)
    assert stats_from_trtexec(result, std_ms=0.2).median_ms == 1.43823


@needs_fixtures
def test_stats_from_trtexec_82_lacks_p90_p95():
    result = parse_trtexec_log((FIXTURES / "jetson-nano-trt8201-summary.log").read_text())
    with pytest.raises(DeployError, match=r"\['p90_ms', 'p95_ms'\]"):
        stats_from_trtexec(result, std_ms=0.1)
    lat = trtexec_latency_dict(result, metric="end_to_end_host_latency")
    assert lat["median_ms"] == 13.8109 and lat["p90_ms"] is None and lat["p99_ms"] == 14.831


@needs_fixtures
def test_end_to_end_missing_on_10x():
    result = parse_trtexec_log((FIXTURES / "desktop-trt10900-resnet50-summary.log").read_text())
    with pytest.raises(DeployError, match="no 'end_to_end_host_latency' statistics"):
        trtexec_latency_dict(result, metric="end_to_end_host_latency")
    with pytest.raises(ValueError, match="unknown metric"):
        trtexec_latency_dict(result, metric="p50")
