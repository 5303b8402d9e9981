"""TensorRT Python-API build decisions per version (no TensorRT needed), and the real build where it runs."""
from __future__ import annotations

import pytest

from edge_compress.deploy.errors import DeployError
from edge_compress.deploy.builders.trt import build_plan


@pytest.mark.parametrize("version,explicit,io,workspace", [
    ("8.2.1", True, "bindings", "max_workspace_size"),      # Jetson Nano, JetPack 4.6
    ("8.4.1", True, "bindings", "memory_pool_limit"),
    ("8.5.2", True, "named_tensors", "memory_pool_limit"),
    ("8.6.1", True, "named_tensors", "memory_pool_limit"),
    ("10.3.0", False, "named_tensors", "memory_pool_limit"),  # JetPack 6.x
    ("10.9.0", False, "named_tensors", "memory_pool_limit"),
])
def test_plan_follows_the_version(version, explicit, io, workspace):
    plan = build_plan(version, "fp16")
    assert plan.explicit_batch_flag is explicit and plan.io_api == io and plan.workspace_api == workspace
    assert plan.precision_flags == ("FP16",) and not plan.strongly_typed


def test_tensorrt_11_is_strongly_typed_without_precision_flags():
    plan = build_plan("11.3.0", "fp16", dla_core=0)
    assert plan.strongly_typed and plan.precision_flags == () and not plan.explicit_batch_flag


def test_int8_and_dla_flags():
    assert build_plan("8.6.1", "int8").precision_flags == ("INT8", "FP16")
    assert build_plan("8.6.1", "fp32").precision_flags == ()
    assert build_plan("8.6.1", "fp16", dla_core=1).precision_flags == ("FP16", "GPU_FALLBACK")


@pytest.mark.parametrize("args,needle", [
    (("7.1.3", "fp16"), "unsupported TensorRT version"),
    (((8, 0, 1), "fp16"), "older than 8.2"),
    (("8.6.1", "bf8"), "unknown precision"),
])
def test_bad_plans_are_refused(args, needle):
    with pytest.raises(DeployError, match=needle):
        build_plan(*args)


def test_build_and_run_need_tensorrt_and_a_gpu(tmp_path):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed here (no NVIDIA GPU on this machine); "
                                                 "the Python-API build was NOT verified")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("TensorRT imports but no CUDA device is visible; the build was NOT verified")
    from edge_compress.deploy.builders.trt import build_engine
    from edge_compress.deploy.runners.trt import TrtRunner
    from edge_compress.export import export_onnx

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 30 * 30, 4))
    x = torch.randn(1, 3, 32, 32)
    export_onnx(model.eval(), x, tmp_path / "m.onnx", opset=17)
    engine = build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", "fp16", timing_cache=tmp_path / "cache.bin")
    assert engine.path.is_file() and engine.plan.version[0] == int(trt.__version__.split(".")[0])
    with TrtRunner(engine.path) as runner:
        out = runner.infer({runner.input_names[0]: x.numpy()})
        stats = runner.measure({runner.input_names[0]: x.numpy()}, warmup_runs=5, timed_runs=20)
    ref = model(x).detach().numpy()
    assert abs(list(out.values())[0] - ref).max() < 1e-2 and stats.runs == 20
