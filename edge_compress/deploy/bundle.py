"""The script that goes into the device bundle and builds the engine on the device."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from edge_compress.deploy.atomic import atomic_write_text

_NOTES = (
    "Run this ON the target device: a TensorRT engine only works on the GPU model and TensorRT",
    "version that built it, so an engine built elsewhere will not load (or will be slow) there.",
    "On a Jetson, set maximum clocks before measuring: sudo nvpmodel -m 0 && sudo jetson_clocks",
    "Paths are relative to this script's folder.",
)


def render_build_script(argv: Sequence[str], description: str) -> str:
    """The text of the build script (see ``write_build_script``)."""
    if isinstance(argv, str) or not argv or not all(isinstance(a, str) and a for a in argv):
        raise ValueError(f"argv must be a non-empty list of non-empty strings, got {argv!r}")
    header = [f"# {line}".rstrip() for line in description.splitlines() or [""]]
    header += ["#"] + [f"# {line}" for line in _NOTES]
    tool = shlex.quote(argv[0])
    command = " \\\n    ".join(shlex.quote(a) for a in argv)
    lines = [
        "#!/usr/bin/env bash",
        *header,
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "",
        f"if ! command -v {tool} >/dev/null 2>&1; then",
        f"    echo {shlex.quote(f'error: cannot run {argv[0]}: not found or not executable.')}"
        " 'On JetPack trtexec is /usr/src/tensorrt/bin/trtexec:"
        " add /usr/src/tensorrt/bin to PATH or edit this script.' >&2",
        "    exit 127",
        "fi",
        "",
        f"exec {command}",
    ]
    return "\n".join(lines) + "\n"


def write_build_script(path: str | os.PathLike[str], argv: list[str], description: str) -> Path:
    """Write an executable bash script that runs ``argv`` (from ``trtexec_command``) on the device.

    Every argument is shell-quoted, so the script passes exactly ``argv``. The script changes to
    its own folder first, so relative paths in ``argv`` refer to files in the bundle. Written
    atomically with mode 0755.
    """
    return atomic_write_text(path, render_build_script(argv, description), mode=0o755)


def write_device_bundle(out_dir: str | os.PathLike[str], onnx_name: str = "model.onnx",
                        input_shape: tuple[int, ...] | None = None, seed: int = 0,
                        build_script: str | None = "build_engine.sh", description: str = "") -> dict:
    """Add what a device needs to build and check the engine without the host tooling.

    Next to the ONNX model (and build_engine.sh for TensorRT targets): `device_bench.py` (runs on the
    device's own Python 3.6+ with numpy and onnxruntime), `expected_output.json` (every output for a
    fixed seeded input, computed here with ONNX Runtime CPU: its sha256, values and a tolerance, since
    another runtime or FP16 will not reproduce the bytes; `output` is the first, `outputs` all of them,
    by name), and a README saying how to use them.
    """
    import json
    import shutil

    import onnxruntime as ort

    from edge_compress.deploy.runners import device_bench
    from edge_compress.deploy.atomic import atomic_path

    out = Path(out_dir)
    shutil.copyfile(Path(device_bench.__file__), out / "device_bench.py")
    sess = ort.InferenceSession(str(out / onnx_name), providers=["CPUExecutionProvider"])
    inputs = [(i.name, i.type, i.shape) for i in sess.get_inputs()]
    shapes = {inputs[0][0]: tuple(input_shape)} if input_shape else {}
    feed = device_bench.fixed_feed(inputs, shapes, seed)
    names = [o.name for o in sess.get_outputs()]
    outputs = [_expected(name, array) for name, array in zip(names, sess.run(None, feed))]
    first = inputs[0][0]
    expected = {
        "input": {"name": first, "shape": list(feed[first].shape), "seed": seed,
                  "generator": "numpy.random.RandomState(seed) via device_bench.fixed_feed",
                  "sha256": device_bench.output_checksum(feed[first])},
        "output": outputs[0],
        "outputs": outputs,
        "computed_with": f"onnxruntime {ort.__version__} CPUExecutionProvider on the host",
        "tolerance": {"fp32_max_abs": 1e-4, "fp16_max_abs": 5e-2,
                      "note": "the sha256 matches only the same runtime on the same kind of CPU; compare values "
                              "otherwise (each output on its own; `values` holds the first 1000 of each)"},
    }
    with atomic_path(out / "expected_output.json") as tmp:
        tmp.write_text(json.dumps(expected, indent=2) + "\n")
    shape_arg = "x".join(str(d) for d in feed[first].shape)
    lines = [f"# Device bundle{': ' + description if description else ''}", "",
             "Everything here runs on the device without the host tooling.", ""]
    if build_script:
        lines += [f"1. Build the engine: `bash {build_script}` (the exact trtexec command for the profile's TensorRT "
                  "version; engines are specific to the device and its TensorRT version).", ""]
    lines += [f"{'2' if build_script else '1'}. Benchmark with ONNX Runtime on the device's Python (3.6+, numpy, "
              "onnxruntime):", "",
              f"       python3 device_bench.py {onnx_name} --warmup 20 --runs 200 --threads 1 "
              f"--input-shape {shape_arg} --seed {seed} --out result.json", "",
              "   `result.json` has the latency distribution (median, p90, p95, p99), the provider that ran, and "
              "`output_sha256` for the fixed input.", "",
              f"{'3' if build_script else '2'}. Check the output: `output_sha256` in result.json equals "
              "`output.sha256` in expected_output.json on the same runtime and CPU kind; elsewhere compare the "
              "values within the tolerance given there."
              + (f" The model has {len(names)} outputs ({', '.join(f'`{n}`' for n in names)}): `outputs` in both "
                 "files lists each one by name." if len(names) > 1 else ""), ""]
    with atomic_path(out / "README.md") as tmp:
        tmp.write_text("\n".join(lines))
    return {"files": ["device_bench.py", "expected_output.json", "README.md"] + ([build_script] if build_script else []),
            "expected_output_sha256": expected["output"]["sha256"], "input_shape": list(feed[first].shape),
            "expected_outputs": {o["name"]: o["sha256"] for o in outputs}}


def _expected(name: str, array) -> dict:
    """One output's expected values: name, shape, dtype, checksum and the first 1000 values."""
    import numpy as np

    from edge_compress.deploy.runners import device_bench

    array = np.asarray(array)
    return {"name": name, "shape": list(array.shape), "dtype": str(array.dtype),
            "sha256": device_bench.output_checksum(array),
            "values": np.asarray(array, dtype=np.float64).ravel()[:1000].round(6).tolist()}
