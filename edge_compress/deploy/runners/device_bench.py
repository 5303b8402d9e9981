#!/usr/bin/env python3
"""ONNX Runtime latency benchmark that runs on the target device itself.

This file is copied to the device (and into the device bundle) and run by the device's own
Python, which is 3.6 on a Jetson Nano with JetPack 4: so no f-string ``=`` specifiers, no walrus,
no dataclasses, no postponed annotations, and nothing outside the standard library, numpy and
onnxruntime. The host imports ``fixed_feed`` and ``output_checksum`` from here, so that the
expected checksums written into a bundle come from the very code the device runs.

    python3 device_bench.py model.onnx --warmup 20 --runs 200 --threads 1 \\
        [--input-shape 1x3x32x32] [--seed 0] [--providers CPUExecutionProvider] --out result.json
"""

import argparse
import gc
import hashlib
import importlib
import json
import os
import platform
import socket
import sys
import time

try:
    import numpy as np
except ImportError:  # reported by main() with an install hint instead of a traceback
    np = None

RESULT_FORMAT = 1

# ONNX Runtime names element types as "tensor(float)" etc.; numpy names as strings, so that this
# module loads (and main() can explain) on a device without numpy.
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def parse_shape(text):
    """``"1x3x32x32"`` -> (1, 3, 32, 32)."""
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise ValueError("bad input shape %r: expected positive ints joined by 'x', e.g. 1x3x32x32" % (text,))
    return dims


def fixed_input(shape, dtype, rng):
    """A reproducible input: the same seed gives the same bytes on every numpy version.

    ``RandomState`` (not ``default_rng``) because its stream is frozen across numpy releases and
    exists in the old numpy a JetPack 4 device ships.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.randint(0, 2, size=shape).astype(dtype)
    # Small non-negative integers stay valid as indices or token ids for most models.
    return rng.randint(0, 10, size=shape).astype(dtype)


def fixed_feed(inputs, shapes, seed):
    """Feed for ``inputs`` (pairs of name, ORT type string, ORT shape), all from one seeded stream.

    ``shapes`` maps names to concrete shapes (key None means the first input); without one,
    symbolic dimensions become 1.
    """
    rng = np.random.RandomState(seed)
    feed = {}
    for index, (name, type_str, ort_shape) in enumerate(inputs):
        if type_str not in _ORT_DTYPES:
            raise ValueError("input %r has type %s, which this benchmark cannot generate" % (name, type_str))
        shape = shapes.get(name)
        if shape is None and index == 0:
            shape = shapes.get(None)
        if shape is None:
            shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in ort_shape)
        feed[name] = fixed_input(shape, _ORT_DTYPES[type_str], rng)
    return feed


def output_checksum(array):
    """sha256 of an output's little-endian bytes, so that hosts and devices of either byte order agree."""
    array = np.asarray(array)
    canonical = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return hashlib.sha256(canonical.tobytes()).hexdigest()


def describe_outputs(names, arrays):
    """Name, shape, dtype and checksum of every output, in the graph's order."""
    out = []
    for name, array in zip(names, arrays):
        array = np.asarray(array)
        out.append({"name": name, "shape": list(array.shape), "dtype": str(array.dtype),
                    "sha256": output_checksum(array)})
    return out


def percentile(sorted_samples, q):
    """Linear interpolation between closest ranks, as numpy's default, without numpy-version drift."""
    if len(sorted_samples) == 1:
        return sorted_samples[0]
    rank = (len(sorted_samples) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(sorted_samples) - 1)
    return sorted_samples[low] + (sorted_samples[high] - sorted_samples[low]) * (rank - low)


def summarize(samples_ms):
    ordered = sorted(samples_ms)
    return {
        "median_ms": percentile(ordered, 50),
        "p90_ms": percentile(ordered, 90),
        "p95_ms": percentile(ordered, 95),
        "p99_ms": percentile(ordered, 99),
        "mean_ms": sum(ordered) / len(ordered),
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
    }


def _parse_shape_args(values):
    shapes = {}
    for value in values or []:
        name, sep, dims = value.rpartition(":")
        shapes[name if sep else None] = parse_shape(dims)
    return shapes


def run_benchmark(model, warmup, runs, threads, shapes, seed, providers):
    # Imported here so that the host can use the helpers above without importing onnxruntime.
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, sess_options=options, providers=list(providers))
    inputs = [(i.name, i.type, list(i.shape)) for i in session.get_inputs()]
    feed = fixed_feed(inputs, shapes, seed)

    first = session.run(None, feed)
    for _ in range(warmup):
        session.run(None, feed)
    samples_ms = []
    # A garbage-collector pass inside the loop would show up as a fake latency outlier.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, feed)
            samples_ms.append((time.perf_counter() - start) * 1e3)
    finally:
        if gc_was_enabled:
            gc.enable()

    first_input = feed[inputs[0][0]]
    result = {
        "format": RESULT_FORMAT,
        "model": os.path.basename(model),
        "runs": runs,
        "warmup": warmup,
        "threads": threads,
        "seed": seed,
        "batch_size": int(first_input.shape[0]) if first_input.ndim >= 1 else 1,
        "input_shapes": dict((name, list(arr.shape)) for name, arr in feed.items()),
        "providers_requested": list(providers),
        "providers": session.get_providers(),
        # The session's first provider is the one that runs the graph (a provider that failed
        # to load is absent from this list, so a silent CPU fallback shows up here).
        "provider": session.get_providers()[0],
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        # the first output (as before models could have several), then every output in the graph's order
        "output_name": session.get_outputs()[0].name,
        "output_shape": list(np.asarray(first[0]).shape),
        "output_dtype": str(np.asarray(first[0]).dtype),
        "output_sha256": output_checksum(first[0]),
        "outputs": describe_outputs([o.name for o in session.get_outputs()], first),
        "samples_ms": samples_ms,
    }
    result.update(summarize(samples_ms))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description="Time an ONNX model with ONNX Runtime on this machine.")
    parser.add_argument("model", help="path of the .onnx model")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs first (default 20)")
    parser.add_argument("--runs", type=int, default=200, help="timed runs (default 200)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: ORT's)")
    parser.add_argument(
        "--input-shape", action="append", default=[],
        help="SHAPE for the first input or NAME:SHAPE, e.g. 1x3x32x32; repeatable",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fixed input (default 0)")
    parser.add_argument(
        "--providers", default="CPUExecutionProvider",
        help="comma-separated execution providers in order of preference",
    )
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    args = parser.parse_args(argv)

    if args.warmup < 0 or args.runs < 1:
        parser.error("--warmup must be >= 0 and --runs >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    try:
        shapes = _parse_shape_args(args.input_shape)
    except ValueError as exc:
        parser.error(str(exc))
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    if not os.path.isfile(args.model):
        sys.stderr.write("error: model not found: %s\n" % args.model)
        return 2
    if np is None:
        sys.stderr.write(
            "error: numpy does not import on this device: install it for %s, "
            "e.g. sudo apt-get install python3-numpy or pip3 install numpy\n" % sys.executable
        )
        return 3
    try:
        importlib.import_module("onnxruntime")
    except ImportError as exc:
        sys.stderr.write(
            "error: onnxruntime does not import on this device (%s): install it for %s, "
            "e.g. pip3 install onnxruntime (a Jetson needs NVIDIA's onnxruntime-gpu wheel)\n"
            % (exc, sys.executable)
        )
        return 3

    result = run_benchmark(args.model, args.warmup, args.runs, args.threads, shapes, args.seed, providers)
    # Written next to the target and renamed, so that a fetch never sees half a file.
    tmp = args.out + ".part"
    with open(tmp, "w") as handle:
        json.dump(result, handle, indent=1, sort_keys=True)
    os.replace(tmp, args.out)
    sys.stdout.write(
        "median %.3f ms, p90 %.3f ms, p99 %.3f ms over %d runs on %s (%s)\n"
        % (result["median_ms"], result["p90_ms"], result["p99_ms"], result["runs"],
           result["provider"], result["hostname"])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
