"""Tests for deploy/: real onnxruntime sessions on tiny ONNX models built here, real subprocesses."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_compress.deploy import (
    DeployError,
    InferenceRunner,
    LatencyStats,
    OrtEngine,
    OrtRunner,
    ProviderError,
    ProviderFallbackWarning,
    Runner,
    RunnerStateError,
    build_ort_engine,
    environment_info,
    measure_interleaved,
    trtexec_command,
    write_build_script,
)

# The command line of a real trtexec 8.2.1 run on a Jetson Nano, copied from the last line of
# shared/fixtures/trtexec/jetson-nano-trt8201-summary.log (checked against the file when present).
NANO_8201_PASSED = (
    "&&&& PASSED TensorRT.trtexec [TensorRT v8201] # /usr/src/tensorrt/bin/trtexec "
    "--onnx=best.onnx --saveEngine=here.engine --best"
)
# Same for shared/fixtures/trtexec/desktop-trt10900-resnet50-summary.log (TensorRT 10.9).
DESKTOP_10900_PASSED = (
    "&&&& PASSED TensorRT.trtexec [TensorRT v100900] [b34] # trtexec "
    "--onnx=resnet50/model.onnx --saveEngine=resnet50/model.trt"
)
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "trtexec"

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


# -- tiny models ----------------------------------------------------------------------------------


def _conv_model(path: Path, batch: int | str = 1) -> Path:
    """Conv(3->4, 3x3, pad 1) + Relu + GlobalAveragePool on [batch, 3, 16, 16], opset 13."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 4, 1, 1])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _conv_model(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture(scope="module")
def feed() -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)}


def _reference_output(x: np.ndarray, model_path: Path) -> np.ndarray:
    """The model's output computed with numpy only, independent of onnxruntime."""
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(model_path).graph.initializer}
    w, b = inits["w"], inits["b"]
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    conv = np.einsum("nchwij,ocij->nohw", windows, w) + b[None, :, None, None]
    return np.maximum(conv, 0).mean(axis=(2, 3), keepdims=True)


# -- LatencyStats ---------------------------------------------------------------------------------

META = dict(
    warmup_runs=5,
    batch_size=4,
    runtime="onnxruntime test",
    provider=CPU,
    threads=2,
    where="local: test",
)


def test_stats_match_numpy_on_known_samples() -> None:
    samples = [3.0, 1.0, 2.0, 10.0, 4.0, 5.0, 2.5, 7.0, 1.5, 6.0, 2.2]
    stats = LatencyStats.from_samples(samples, **META)
    arr = np.array(samples)
    assert stats.median_ms == pytest.approx(np.median(arr))
    assert stats.mean_ms == pytest.approx(arr.mean())
    assert stats.std_ms == pytest.approx(arr.std())
    assert (stats.min_ms, stats.max_ms) == (1.0, 10.0)
    for p in (90, 95, 99):
        assert getattr(stats, f"p{p}_ms") == pytest.approx(np.percentile(arr, p, method="linear"))
    # Hand-checked linear interpolation: rank 0.9 * 10 = 9 -> sorted[9] = 7.0; 0.95 * 10 = 9.5.
    assert stats.p90_ms == pytest.approx(7.0)
    assert stats.p95_ms == pytest.approx(8.5)
    assert stats.runs == 11 and stats.warmup_runs == 5
    assert stats.throughput_ips == pytest.approx(4 * 1000.0 / arr.mean())
    assert stats.method == "measured"


def test_stats_to_dict_is_plain_json_and_round_trips() -> None:
    stats = LatencyStats.from_samples([1.0, 2.0, 3.0], **META)
    data = stats.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert all(type(v) in (int, float, str, type(None)) for v in data.values())
    assert LatencyStats.from_dict(data) == stats
    with pytest.raises(ValueError, match="unknown LatencyStats keys"):
        LatencyStats.from_dict({**data, "latency": 1.0})


def test_stats_reject_empty_and_bad_samples_and_meta() -> None:
    with pytest.raises(ValueError):
        LatencyStats.from_samples([], **META)
    with pytest.raises(ValueError):
        LatencyStats.from_samples([1.0, float("nan")], **META)
    with pytest.raises(TypeError, match="missing"):
        LatencyStats.from_samples([1.0], batch_size=1)
    with pytest.raises(TypeError, match="unknown"):
        LatencyStats.from_samples([1.0], **META, latency_unit="s")


# -- OrtRunner ------------------------------------------------------------------------------------


def test_ort_runner_runs_on_cpu_and_matches_reference(model_path: Path, feed) -> None:
    with OrtRunner(model_path, threads=1) as runner:
        assert runner.provider == CPU
        assert runner.fallback is None
        assert runner.input_names == ["input"]
        assert runner.output_names == ["output"]
        assert runner.input_shapes == {"input": (1, 3, 16, 16)}
        outputs = runner.infer(feed)
        assert runner.last_inference_time_ms is not None and runner.last_inference_time_ms > 0
    assert set(outputs) == {"output"}
    assert outputs["output"].shape == (1, 4, 1, 1)
    np.testing.assert_allclose(outputs["output"], _reference_output(feed["input"], model_path), rtol=1e-4, atol=1e-5)
    assert not runner.is_active


def test_symbolic_dims_are_strings(tmp_path: Path) -> None:
    path = _conv_model(tmp_path / "dyn.onnx", batch="N")
    with OrtRunner(path) as runner:
        assert runner.input_shapes == {"input": ("N", 3, 16, 16)}
        x = np.zeros((3, 3, 16, 16), np.float32)
        assert runner.infer({"input": x})["output"].shape == (3, 4, 1, 1)
        assert runner.measure({"input": x}, warmup_runs=0, timed_runs=2).batch_size == 3


def test_measure_excludes_and_counts_warmup(model_path: Path, feed) -> None:
    with OrtRunner(model_path, threads=1) as runner:
        stats = runner.measure(feed, warmup_runs=3, timed_runs=20)
    assert stats.runs == 20
    assert stats.warmup_runs == 3
    assert stats.batch_size == 1
    assert stats.provider == CPU and stats.threads == 1
    assert stats.runtime == f"onnxruntime {ort.__version__}"
    assert stats.where.startswith("local: ") and "cores" in stats.where
    assert 0 < stats.min_ms <= stats.median_ms <= stats.p90_ms <= stats.p99_ms <= stats.max_ms
    assert stats.throughput_ips == pytest.approx(1000.0 / stats.mean_ms)


class _CountingRunner(InferenceRunner):
    """A minimal backend: proves measure() calls infer exactly warmup + timed times."""

    def __init__(self) -> None:
        super().__init__("counting")
        self.calls = 0

    def _activate_impl(self) -> None: ...

    def _infer_impl(self, feed):
        self.calls += 1
        return {"y": feed["x"]}

    def _deactivate_impl(self) -> None: ...

    input_names = ["x"]  # type: ignore[assignment]
    runtime = "counting 0"  # type: ignore[assignment]
    provider = "none"  # type: ignore[assignment]


class _DriftingRunner(InferenceRunner):
    """Sleeps ``base_ms`` times a machine slowdown that grows with every call any runner makes."""

    machine_calls = 0

    def __init__(self, name: str, base_ms: float) -> None:
        super().__init__(name)
        self.base_ms = base_ms

    def _activate_impl(self) -> None: ...

    def _infer_impl(self, feed):
        _DriftingRunner.machine_calls += 1
        time.sleep(self.base_ms * (1 + _DriftingRunner.machine_calls / 30) / 1e3)
        return {"y": feed["x"]}

    def _deactivate_impl(self) -> None: ...

    input_names = ["x"]  # type: ignore[assignment]
    runtime = "sleep 0"  # type: ignore[assignment]
    provider = "none"  # type: ignore[assignment]


def test_interleaved_measurement_keeps_the_ratio_under_drift() -> None:
    """A machine that slows down while two models are timed: one after the other, the second looks
    about twice as slow as it is (4x instead of 2x); interleaved, their ratio stays the true 2."""
    feed = {"x": np.zeros((1, 1), np.float32)}
    fast, slow = _DriftingRunner("fast", 0.5), _DriftingRunner("slow", 1.0)
    with fast, slow:
        _DriftingRunner.machine_calls = 0
        a, b = fast.measure(feed, 0, 60), slow.measure(feed, 0, 60)
        sequential = b.median_ms / a.median_ms
        _DriftingRunner.machine_calls = 0
        a, b = measure_interleaved([fast, slow], [feed, feed], warmup_runs=2, timed_runs=60, block=5)
    assert sequential > 3.0   # the drift this test stands for really fools a sequential measurement (~4)
    assert b.median_ms / a.median_ms == pytest.approx(2.0, rel=0.2)
    assert a.runs == b.runs == 60 and a.warmup_runs == 2
    assert "interleaved" in a.method and "blocks of 5" in b.method
    with pytest.raises(ValueError, match="each with its feed"):
        measure_interleaved([fast, slow], [feed], 0, 10)
    with fast, slow:
        with pytest.raises(ValueError, match="block"):
            measure_interleaved([fast, slow], [feed, feed], 0, 10, block=0)
        with pytest.raises(ValueError, match="timed_runs"):
            measure_interleaved([fast, slow], [feed, feed], 0, 0)


def test_runner_base_contract() -> None:
    runner = _CountingRunner()
    x = {"x": np.ones((2, 3), np.float32)}
    with pytest.raises(RunnerStateError):
        runner.infer(x)
    with runner:
        with pytest.raises(RunnerStateError):
            runner.activate()
        with pytest.raises(ValueError, match="missing"):
            runner.infer({"z": x["x"]})
        stats = runner.measure(x, warmup_runs=4, timed_runs=7)
        with pytest.raises(ValueError):
            runner.measure(x, warmup_runs=0, timed_runs=0)
    assert runner.calls == 11
    assert (stats.runs, stats.warmup_runs, stats.batch_size) == (7, 4, 2)
    assert len(runner.cpu_samples_ms) == 7 and all(t >= 0 for t in runner.cpu_samples_ms)
    assert isinstance(runner, Runner) and not runner.is_active


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="CUDA EP is available here")
def test_missing_provider_required_raises_naming_both(model_path: Path) -> None:
    runner = OrtRunner(model_path, providers=[CUDA, CPU], require_provider=True)
    with pytest.raises(ProviderError) as info:
        runner.activate()
    message = str(info.value)
    assert CUDA in message and CPU in message and "onnxruntime-gpu" in message
    assert "\n" not in message
    assert isinstance(info.value, DeployError)
    assert not runner.is_active


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="CUDA EP is available here")
def test_missing_provider_falls_back_with_warning(model_path: Path, feed) -> None:
    runner = OrtRunner(model_path, providers=[CUDA, CPU])
    with pytest.warns(ProviderFallbackWarning, match=f"{CUDA} unavailable, ran {CPU}"):
        runner.activate()
    try:
        assert runner.provider == CPU
        assert runner.fallback == f"{CUDA} unavailable, ran {CPU}"
        assert runner.measure(feed, warmup_runs=1, timed_runs=3).provider == CPU
    finally:
        runner.deactivate()


def test_runner_rejects_bad_options(model_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown ONNX Runtime execution provider"):
        OrtRunner(model_path, providers=["CudaProvider"])
    with pytest.raises(ValueError, match="graph_optimization"):
        OrtRunner(model_path, graph_optimization="max")
    with pytest.raises(ValueError, match="threads"):
        OrtRunner(model_path, threads=0)


# -- build_ort_engine -----------------------------------------------------------------------------


def test_ort_engine_loads_and_matches_original(model_path: Path, feed, tmp_path: Path) -> None:
    out = tmp_path / "engines" / "tiny.cpu.ort.onnx"
    engine = build_ort_engine(model_path, out, threads=1)
    assert isinstance(engine, OrtEngine)
    assert engine.path == out and out.is_file()
    assert engine.provider == CPU
    assert engine.optimization_level == "all"
    assert engine.runtime_version == ort.__version__
    assert len(engine.sha256) == 64
    assert json.loads(json.dumps(engine.to_dict()))["path"] == str(out)
    # Atomic: only the engine is left in its folder, no temporary file.
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]

    original = ort.InferenceSession(str(model_path), providers=[CPU]).run(None, feed)[0]
    session = ort.InferenceSession(str(out), providers=[CPU])
    np.testing.assert_allclose(session.run(None, feed)[0], original, rtol=1e-5, atol=1e-6)
    with OrtRunner(out) as runner:
        assert np.allclose(runner.infer(feed)["output"], original, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="CUDA EP is available here")
def test_ort_engine_requires_its_provider_and_leaves_nothing(model_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match=CUDA):
        build_ort_engine(model_path, tmp_path / "cuda.onnx", providers=[CUDA, CPU])
    assert list(tmp_path.iterdir()) == []


# -- trtexec_command ------------------------------------------------------------------------------


def _passed_argv(line: str) -> list[str]:
    return shlex.split(line.split(" # ", 1)[1])


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("jetson-nano-trt8201-summary.log", NANO_8201_PASSED),
        ("desktop-trt10900-resnet50-summary.log", DESKTOP_10900_PASSED),
    ],
)
def test_fixture_lines_are_copied_verbatim(name: str, line: str) -> None:
    fixture = FIXTURES / name
    if not fixture.is_file():
        pytest.skip(f"fixture {fixture} not in this checkout")
    assert fixture.read_text().splitlines()[-1] == line


def test_trtexec_8_2_1_matches_real_jetson_invocation() -> None:
    real = _passed_argv(NANO_8201_PASSED)
    ours = trtexec_command(
        "best.onnx", "here.engine", "8.2.1", "fp32", trtexec_path="/usr/src/tensorrt/bin/trtexec", percentiles=()
    )
    # The real run adds --best (all precisions); the rest is flag for flag the same.
    assert ours == [a for a in real if a != "--best"]
    full = trtexec_command(
        "best.onnx", "here.engine", "8.2.1", "fp16", workspace_mb=1024, shapes={"input": (1, 3, 32, 32)},
        iterations=100, warmup_ms=500, timing_cache="cache.bin",
    )
    # Same style as the real invocation: --flag or --flag=value, never "--flag value".
    assert all(a.startswith("--") and " " not in a for a in full[1:])
    assert "--fp16" in full
    assert "--workspace=1024" in full and not any(a.startswith("--memPoolSize") for a in full)
    assert [a for a in full if a.startswith("--percentile")] == ["--percentile=99"]
    assert "--shapes=input:1x3x32x32" in full
    assert {"--iterations=100", "--warmUp=500", "--timingCacheFile=cache.bin"} <= set(full)
    # Before 8.5 only one percentile is reported: the highest requested.
    assert trtexec_command("m.onnx", "m.engine", "8.2.1", "fp32", percentiles=(50, 90))[-1] == "--percentile=90"


def test_trtexec_8_6_uses_mempoolsize_and_percentile_list() -> None:
    argv = trtexec_command("m.onnx", "m.engine", "8.6", "int8", workspace_mb=2048, dla_core=1)
    assert argv == [
        "trtexec",
        "--onnx=m.onnx",
        "--saveEngine=m.engine",
        "--int8",
        "--memPoolSize=workspace:2048",
        "--useDLACore=1",
        "--allowGPUFallback",
        "--percentile=90,95,99",
    ]
    # 8.4 is the first version with --memPoolSize, 8.5 the first with a percentile list.
    assert "--memPoolSize=workspace:64" in trtexec_command("m", "e", "8.4.3", "fp32", workspace_mb=64)
    assert trtexec_command("m", "e", "8.4.3", "fp32")[-1] == "--percentile=99"
    assert trtexec_command("m", "e", "8.5.1", "fp32")[-1] == "--percentile=90,95,99"


def test_trtexec_10_9_matches_real_desktop_invocation() -> None:
    assert trtexec_command("resnet50/model.onnx", "resnet50/model.trt", "10.9", "fp32", percentiles=()) == (
        _passed_argv(DESKTOP_10900_PASSED)
    )
    argv = trtexec_command("m.onnx", "m.engine", "10.9.0", "fp16", workspace_mb=512, percentiles=(50, 99.9))
    assert argv[3:] == ["--fp16", "--memPoolSize=workspace:512", "--percentile=50,99.9"]


def test_trtexec_11_writes_no_precision_flags() -> None:
    with pytest.warns(UserWarning, match="strongly typed"):
        argv = trtexec_command("m.onnx", "m.engine", "11.0", "fp16", workspace_mb=256)
    assert not {"--fp16", "--int8", "--best"} & set(argv)
    assert argv == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine", "--memPoolSize=workspace:256",
                    "--percentile=90,95,99"]


@pytest.mark.parametrize("version", ["", "8", "eight.two", "8.x", "8.2.1-beta", "7.1.3", None])
def test_trtexec_bad_version_raises_naming_it(version) -> None:
    with pytest.raises(ValueError, match=repr(version).replace(".", r"\.")):
        trtexec_command("m.onnx", "m.engine", version, "fp16")


def test_trtexec_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="precision"):
        trtexec_command("m", "e", "8.6", "fp8")
    with pytest.raises(ValueError, match="workspace_mb"):
        trtexec_command("m", "e", "8.6", "fp16", workspace_mb=0)
    with pytest.raises(ValueError, match="DLA"):
        trtexec_command("m", "e", "8.6", "fp32", dla_core=0)
    with pytest.raises(ValueError, match="percentile"):
        trtexec_command("m", "e", "8.6", "fp16", percentiles=(101,))


# -- write_build_script ---------------------------------------------------------------------------

TRICKY_ARGV_TAIL = [
    "--onnx=model with space.onnx",
    "--saveEngine=it's $HOME `x`.engine",
    "--shapes='in:0':1x3x16x16",
    "--fp16",
]


def _fake_trtexec(bin_dir: Path) -> Path:
    """A real executable that records its working directory and each argument (NUL-separated)."""
    bin_dir.mkdir()
    tool = bin_dir / "trtexec"
    tool.write_text('#!/usr/bin/env bash\npwd > "$FAKE_OUT.cwd"\nprintf \'%s\\0\' "$@" > "$FAKE_OUT"\n')
    tool.chmod(0o755)
    return tool


def test_build_script_passes_exact_argv(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _fake_trtexec(bin_dir)
    bundle = tmp_path / "bundle"
    script = write_build_script(
        bundle / "build_engine.sh", ["trtexec", *TRICKY_ARGV_TAIL], "Jetson Nano, TensorRT 8.2.1\nFP16"
    )
    assert script == bundle / "build_engine.sh"
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    assert sorted(p.name for p in bundle.iterdir()) == ["build_engine.sh"]
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text and 'cd "$(dirname "$0")"' in text
    assert "# Jetson Nano, TensorRT 8.2.1\n# FP16\n" in text
    assert "ON the target device" in text and "jetson_clocks" in text
    subprocess.run(["bash", "-n", str(script)], check=True)

    out = tmp_path / "args.bin"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_OUT": str(out)}
    # Run from elsewhere: the script must move to its own folder before running trtexec.
    subprocess.run([str(script)], check=True, env=env, cwd=tmp_path)
    assert out.read_bytes().split(b"\0")[:-1] == [a.encode() for a in TRICKY_ARGV_TAIL]
    assert Path(out.with_suffix(".bin.cwd").read_text().strip()) == bundle.resolve()


def test_build_script_reports_missing_trtexec(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "trtexec"
    script = write_build_script(tmp_path / "build.sh", [str(missing), "--onnx=m.onnx"], "test")
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert result.returncode == 127
    assert str(missing) in result.stderr and "not found" in result.stderr


def test_build_script_rejects_empty_argv(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_build_script(tmp_path / "b.sh", [], "x")
    assert list(tmp_path.iterdir()) == []


# -- environment_info and import rules --------------------------------------------------------------


def test_environment_info_is_plain_json() -> None:
    info = environment_info()
    assert json.loads(json.dumps(info)) == info
    assert info["onnxruntime"] == ort.__version__ and info["onnx"] == onnx.__version__
    assert info["numpy"] == np.__version__
    assert CPU in info["ort_available_providers"]
    assert isinstance(info["cpu_cores"], int) and info["cpu_cores"] >= 1
    assert info["cpu_model"]


def test_deploy_imports_no_torch_or_project_packages() -> None:
    code = (
        "import sys, edge_compress.deploy; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorrt') or m.split('.')[:2] in "
        "(['edge_compress', 'compress'], ['edge_compress', 'export'], ['edge_compress', 'device_profiles'])]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compress_uses_deploy_only_through_its_public_names() -> None:
    """`compress` imports `edge_compress.deploy` (its __init__), never a module inside it."""
    import ast

    root = Path(__file__).resolve().parents[1] / "edge_compress" / "compress"
    inner = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            inner += [f"{path.name}: {n}" for n in names if n.startswith("edge_compress.deploy.")]
    assert inner == []
