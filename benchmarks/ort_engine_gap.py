"""model.onnx vs model.ort.onnx for ResNet-56 (1x3x32x32), ORT CPU 1 thread, timed interleaved, adaptive."""
import sys, torch
from edge_compress.compress.archs import get_arch
from edge_compress.export import export_onnx, simplify_onnx
from edge_compress.deploy import OrtRunner, StopRule, measure_interleaved, build_ort_engine
torch.manual_seed(0)
a = get_arch("resnet56"); m = a.factory(**a.default_kwargs).eval()
x = torch.randn(1, 3, 32, 32)
import tempfile; d = tempfile.mkdtemp(prefix="ortgap-") + "/"
export_onnx(m, x, d + "raw.onnx", opset=17); simplify_onnx(d + "raw.onnx", d + "model.onnx")
build_ort_engine(d + "model.onnx", d + "model.ort.onnx", threads=1)
rule = StopRule(precision_pct=0.5, min_runs=40, max_runs=2000, max_seconds=120, check_every=20)
for rep in range(1):
    with OrtRunner(d + "model.onnx", threads=1) as p, OrtRunner(d + "model.ort.onnx", threads=1) as o:
        sp, so = measure_interleaved([p, o], [{p.input_names[0]: x.numpy()}, {o.input_names[0]: x.numpy()}], 20, rule)
    print(f"model.onnx {sp.median_ms:.3f} ms, model.ort.onnx {so.median_ms:.3f} ms, ratio ort/plain "
          f"{so.precision.ratio:.4f} [{so.precision.ratio_low:.4f}, {so.precision.ratio_high:.4f}] "
          f"runs {so.runs} stopped on {so.precision.stopped_on}", flush=True)
