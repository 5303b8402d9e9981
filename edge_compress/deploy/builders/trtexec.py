"""The trtexec command line that builds (and times) a TensorRT engine, per TensorRT version.

The host cannot build the engine: an engine is specific to the GPU and TensorRT version that
built it. What it can do is write the exact command for the device's TensorRT, whose flags changed
across versions (verified against trtexec's help text of each version):

- workspace: ``--workspace=N`` (MiB) before 8.4; ``--memPoolSize=workspace:N`` from 8.4. The value
  is written without a unit suffix: 8.4-9.x read it as MiB ("poolfmt ::= pool:sizeInMiB") and 10.x
  takes an optional B/K/M/G suffix defaulting to MiB, so the bare number means the same to all.
- percentiles: one ``--percentile=P`` before 8.5, a comma list from 8.5.
- precision: ``--fp16``/``--int8`` up to 10.x; TensorRT 11 is strongly typed only, so the ONNX
  model's types decide (FP16 weights, Q/DQ nodes) and no precision flag is written.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence

PRECISIONS = ("fp32", "fp16", "int8")
_MIN_SUPPORTED = (8, 0)
_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?(?:\.\d+)?")


def parse_trt_version(version: str) -> tuple[int, int, int]:
    """``"8.2.1"`` -> (8, 2, 1); ``"8.6"`` -> (8, 6, 0); a build number (``"10.3.0.30"``) is ignored."""
    match = _VERSION_RE.fullmatch(version.strip()) if isinstance(version, str) else None
    if match is None:
        raise ValueError(
            f"bad TensorRT version {version!r}: expected MAJOR.MINOR[.PATCH], e.g. '8.2.1' or '10.3'"
        )
    major, minor, patch = int(match[1]), int(match[2]), int(match[3] or 0)
    if (major, minor) < _MIN_SUPPORTED:
        raise ValueError(f"unsupported TensorRT version {version!r}: trtexec_command supports 8.0 and later")
    return major, minor, patch


def trtexec_command(
    onnx: str,
    engine: str,
    trt_version: str,
    precision: str,
    workspace_mb: int | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    trtexec_path: str = "trtexec",
    iterations: int | None = None,
    warmup_ms: int | None = None,
    percentiles: Sequence[float] = (90, 95, 99),
    dla_core: int | None = None,
    timing_cache: str | None = None,
) -> list[str]:
    """The argv that builds ``engine`` from ``onnx`` with trtexec of ``trt_version``, then times it.

    ``precision`` is fp32, fp16 or int8 (``--int8`` without Q/DQ nodes or a calibration cache
    times the engine with placeholder scales: good for speed, not for accuracy). Before 8.5 trtexec
    reports a single percentile: the highest requested is passed (99 with the defaults, which is
    also trtexec's own default), because the tail is what a latency budget is about.
    ``shapes`` is only needed for models with dynamic dimensions. With ``dla_core`` layers the DLA
    cannot run fall back to the GPU (``--allowGPUFallback``).
    """
    version = parse_trt_version(trt_version)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    strongly_typed = version >= (11, 0, 0)
    if dla_core is not None and precision == "fp32" and not strongly_typed:
        raise ValueError("the DLA runs FP16/INT8 layers only: use precision fp16 or int8 with dla_core")

    argv = [trtexec_path, f"--onnx={onnx}", f"--saveEngine={engine}"]
    if precision != "fp32":
        if strongly_typed:
            warnings.warn(
                f"TensorRT {trt_version} is strongly typed: no --{precision} flag is written; "
                f"the ONNX model's own types (FP16 weights / Q/DQ nodes) set the precision",
                stacklevel=2,
            )
        else:
            argv.append(f"--{precision}")
    if workspace_mb is not None:
        _check_int("workspace_mb", workspace_mb, minimum=1)
        if version < (8, 4, 0):
            argv.append(f"--workspace={workspace_mb}")
        else:
            argv.append(f"--memPoolSize=workspace:{workspace_mb}")
    if shapes:
        argv.append(f"--shapes={_shapes_spec(shapes)}")
    if dla_core is not None:
        _check_int("dla_core", dla_core, minimum=0)
        argv += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
    if timing_cache is not None:
        argv.append(f"--timingCacheFile={timing_cache}")
    if iterations is not None:
        _check_int("iterations", iterations, minimum=1)
        argv.append(f"--iterations={iterations}")
    if warmup_ms is not None:
        _check_int("warmup_ms", warmup_ms, minimum=0)
        argv.append(f"--warmUp={warmup_ms}")
    if percentiles:
        for p in percentiles:
            if not 0 <= p <= 100:
                raise ValueError(f"percentile {p} is outside 0..100")
        chosen = [max(percentiles)] if version < (8, 5, 0) else list(percentiles)
        argv.append("--percentile=" + ",".join(_number(p) for p in chosen))
    return argv


def _shapes_spec(shapes: Mapping[str, tuple[int, ...]]) -> str:
    parts = []
    for name, dims in shapes.items():
        if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
            raise ValueError(f"shape of {name!r} must be positive ints, got {dims!r}")
        # trtexec splits the spec on ',' and ':'; it accepts names wrapped in single quotes.
        quoted = f"'{name}'" if any(c in name for c in ",:") else name
        parts.append(f"{quoted}:" + "x".join(str(d) for d in dims))
    return ",".join(parts)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
