"""The runner factory: which runner measures a model for each engine / method / device, and the parts of
the TensorRT paths that run without TensorRT (engine choice, trtexec arguments)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, save

from edge_compress.deploy import (
    DeployError,
    InferenceRunner,
    OrtRunner,
    Runner,
    RunnerConfig,
    SshConnection,
    SshRunner,
    TrtexecRunner,
    make_runner,
    measure_interleaved,
    tensorrt_path,
)
from edge_compress.device_profiles import load_profile


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """x -> Relu -> y, input 1x3x4x4."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    path = tmp_path_factory.mktemp("factory") / "tiny.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


FEED = {"x": np.ones((1, 3, 4, 4), np.float32)}
HOST_CPU = RunnerConfig(engine="onnxruntime", precision="fp32", method="local", threads=1)


def test_local_onnxruntime_is_measured_by_the_ort_runner(tiny):
    runner = make_runner(tiny, HOST_CPU)
    assert isinstance(runner, OrtRunner) and runner.interleavable
    with runner:
        stats = runner.measure(FEED, warmup_runs=1, timed_runs=5)
    assert stats.runs == 5 and stats.runtime.startswith("onnxruntime") and stats.threads == 1


def test_config_from_the_host_profile_and_an_override():
    config = RunnerConfig.from_profile(load_profile("host"))
    assert (config.engine, config.method, config.providers) == ("onnxruntime", "local", ("CPUExecutionProvider",))
    nano = RunnerConfig.from_profile(load_profile("jetson-nano"), method="ssh")
    assert (nano.engine, nano.method, nano.precision) == ("tensorrt", "ssh", "fp16") and nano.trt_version


def test_a_profile_that_measures_nothing_has_no_runner():
    with pytest.raises(ValueError, match="measures nothing"):
        RunnerConfig.from_profile(load_profile("jetson-nano"))


@pytest.mark.parametrize(("imports", "trtexec", "path"), [
    (True, "/usr/bin/trtexec", "tensorrt-python"),    # a Jetson or a GPU workstation with the Python API
    (True, None, "tensorrt-python"),
    (False, "/usr/src/tensorrt/bin/trtexec", "trtexec"),
    (False, None, "onnxruntime-tensorrt-ep"),
])
def test_tensorrt_engine_choice(imports, trtexec, path):
    assert tensorrt_path(imports, trtexec) == path


def test_local_tensorrt_without_tensorrt_or_trtexec_runs_the_profiles_providers(tiny):
    if shutil.which("trtexec") or _tensorrt_imports():
        pytest.skip("TensorRT or trtexec is installed here: the factory picks them instead")
    config = RunnerConfig(engine="tensorrt", precision="fp16", method="local", trt_version="10.3",
                          providers=("TensorrtExecutionProvider", "CPUExecutionProvider"))
    runner = make_runner(tiny, config)
    assert isinstance(runner, OrtRunner) and runner.requested_providers[0] == "TensorrtExecutionProvider"


def test_ssh_gives_the_ssh_runner_for_either_engine(tiny):
    device = SshConnection.from_address("jetson@nano.local:2222")
    ort = make_runner(tiny, RunnerConfig(engine="onnxruntime", precision="fp32", method="ssh"), device)
    trt = make_runner(tiny, RunnerConfig.from_profile(load_profile("jetson-nano"), method="ssh"), device)
    assert isinstance(ort, SshRunner) and ort.runtime == "onnxruntime"
    assert isinstance(trt, SshRunner) and trt.runtime == "trtexec" and trt.where == "ssh: jetson@nano.local:2222"
    assert not trt.interleavable
    with pytest.raises(ValueError, match="SshConnection"):
        make_runner(tiny, RunnerConfig(engine="onnxruntime", precision="fp32", method="ssh"))


def test_runners_that_time_themselves_are_not_interleaved(tiny):
    device = SshConnection.from_address("jetson@nano.local")
    remote = make_runner(tiny, RunnerConfig(engine="onnxruntime", precision="fp32", method="ssh"), device)
    with pytest.raises(ValueError, match="cannot be interleaved"):
        measure_interleaved([make_runner(tiny, HOST_CPU), remote], [FEED, FEED], 0, 5)


def test_trtexec_runner_arguments_follow_the_version(tiny):
    old = TrtexecRunner(tiny, "8.2.1", "fp16", workspace_mb=512).command("m.engine", timed_runs=50)
    new = TrtexecRunner(tiny, "10.3", "int8", workspace_mb=512).command("m.engine", timed_runs=50)
    assert old[0] == "trtexec" and f"--onnx={tiny}" in old and "--fp16" in old and "--workspace=512" in old
    assert "--percentile=99" in old and "--iterations=50" in old
    assert "--int8" in new and "--memPoolSize=workspace:512" in new and "--percentile=90,95,99" in new


def test_trtexec_runner_without_trtexec_says_how_to_get_it(tiny):
    if shutil.which("trtexec"):
        pytest.skip("trtexec is installed here")
    with pytest.raises(DeployError, match="trtexec is not installed here.*PATH"):
        with TrtexecRunner(tiny, "10.3", trtexec_path="trtexec"):
            pass


@pytest.mark.parametrize("cls", [OrtRunner, TrtexecRunner, SshRunner])
def test_every_runner_is_a_runner(cls):
    assert issubclass(cls, Runner) and cls.interleavable == issubclass(cls, InferenceRunner)


def _tensorrt_imports() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None
