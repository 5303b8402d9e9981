"""Parse the text trtexec prints: performance summary, trace averages, version and command line.

Formats differ by TensorRT version (see ../shared/fixtures/trtexec/README.md):

- 8.0-8.4 print one ``percentile(P%)`` per statistic, 8.5+ one per requested percentile;
- ``End-to-End Host Latency`` exists up to 8.3 and is gone from 8.4;
- trace averages carry ``(end to end E ms, enqueue Q ms)`` in 8.x-style output and only
  ``(enqueue Q ms)`` in 10.x;
- the final ``&&&& PASSED TensorRT.trtexec [TensorRT v8201] # <command>`` line encodes the version
  as MAJOR*1000+MINOR*100+PATCH up to 9.x and MAJOR*10000+MINOR*100+PATCH from 10.0 (``v100900``).

Numbers are kept as written (milliseconds for statistics, seconds for the two totals): nothing is
rescaled, so every value can be checked against the log by eye.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from edge_compress.deploy.errors import DeployError
from edge_compress.deploy.runners.adaptive import MedianPrecision
from edge_compress.deploy.runners.stats import LatencyStats

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
# Optional "[05/18/2023-21:52:15] " then optional "[I] "; lines piped without them still parse.
_PREFIX_RE = re.compile(r"^(?:\[\d{2}/\d{2}/\d{4}-\d{2}:\d{2}:\d{2}\]\s*)?(?:\[([IWEVF])\]\s?)?(.*)$")
_SECTION_RE = re.compile(r"^===\s*(.+?)\s*===$")
_STAT_LINE_RE = re.compile(r"^([A-Za-z][A-Za-z0-9 \-/]*?):\s*(min\s*=.*)$")
_STAT_ITEM_RE = re.compile(rf"(min|max|mean|median|percentile\(\s*({_NUM})\s*%\s*\))\s*=\s*({_NUM})\s*(\w+)")
_THROUGHPUT_RE = re.compile(rf"^Throughput:\s*({_NUM})\s*qps\b")
_TOTAL_RE = re.compile(rf"^Total (Host Walltime|GPU Compute Time):\s*({_NUM})\s*s\b")
_TRACE_RE = re.compile(
    rf"^Average on (\d+) runs - GPU latency:\s*({_NUM}) ms - Host latency:\s*({_NUM}) ms"
    rf"\s*\((?:end to end\s*({_NUM}) ms,\s*)?enqueue\s*({_NUM}) ms\)"
)
_TRACE_HEADER_RE = re.compile(r"^Trace averages of (\d+) runs:")
_BANNER_RE = re.compile(r"&&&&\s+(\w+)\s+TensorRT\.trtexec\s+\[TensorRT v(\d+)\](?:\s*\[(\w+)\])?\s*(?:#\s*(.*))?$")
_VERSION_LINE_RE = re.compile(r"^TensorRT version:\s*(\d+)\.(\d+)\.(\d+)")
_CV_RE = re.compile(rf"GPU compute time is unstable, with coefficient of variance = ({_NUM})%")
_KEY_VALUE_RE = re.compile(r"^([A-Za-z][A-Za-z0-9 ()/\-]*?):\s*(.*)$")

# Summary line name -> attribute name; a name not listed still lands in ``metrics`` (snake_case).
_KNOWN_METRICS = {
    "Latency": "latency",
    "End-to-End Host Latency": "end_to_end_host_latency",
    "Enqueue Time": "enqueue_time",
    "H2D Latency": "h2d_latency",
    "GPU Compute Time": "gpu_compute_time",
    "D2H Latency": "d2h_latency",
}
_PRECISION_FLAGS = ("fp16", "int8", "fp8", "int4", "bf16", "best", "tf32", "noTF32", "stronglyTyped")
_SUMMARY = "Performance summary"


@dataclass(frozen=True)
class Distribution:
    """One summary line: min/max/mean/median and the percentiles it prints, all in ms.

    ``percentiles`` maps the percentile as written ("99", "99.9") to its value.
    """

    min: float
    max: float
    mean: float
    median: float
    percentiles: dict[str, float]


@dataclass(frozen=True)
class TraceAverage:
    """One ``Average on N runs`` line (ms); ``end_to_end_ms`` is None where the version omits it."""

    runs: int
    gpu_latency_ms: float
    host_latency_ms: float
    end_to_end_ms: float | None
    enqueue_ms: float


@dataclass(frozen=True)
class TrtexecResult:
    """What one trtexec log says; None/empty where the log does not print it.

    ``version`` comes from the ``TensorRT version:`` line or the ``[TensorRT vNNNN]`` banner.
    ``format_hint`` is what the summary layout alone implies about the version (useful for
    trimmed logs without a banner): ``"<8.4"`` with an End-to-End line, ``">=8.5"`` with several
    percentiles, ``">=8.4"`` otherwise. ``iterations`` is printed by no trtexec summary; it is
    derived as round(throughput x total host walltime), which is how trtexec computes the
    throughput, and None when either is missing.
    """

    version: tuple[int, int, int] | None
    version_code: int | None
    build: str | None
    status: str | None
    command: str | None
    options: dict[str, str | bool]
    device: str | None
    throughput_qps: float
    metrics: dict[str, Distribution]
    total_host_walltime_s: float | None
    total_gpu_compute_time_s: float | None
    gpu_compute_cv_percent: float | None
    trace: tuple[TraceAverage, ...]
    trace_window: int | None
    warnings: tuple[str, ...]
    sections: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def version_str(self) -> str | None:
        return None if self.version is None else ".".join(map(str, self.version))

    @property
    def percentile_keys(self) -> tuple[str, ...]:
        return tuple(self.metrics["latency"].percentiles)

    @property
    def format_hint(self) -> str:
        if "end_to_end_host_latency" in self.metrics:
            return "<8.4"
        return ">=8.5" if len(self.percentile_keys) > 1 else ">=8.4"

    @property
    def iterations(self) -> int | None:
        if self.total_host_walltime_s is None:
            return None
        return round(self.throughput_qps * self.total_host_walltime_s)

    @property
    def precision_flags(self) -> tuple[str, ...]:
        return tuple(f for f in _PRECISION_FLAGS if self.options.get(f) is True)

    @property
    def workspace(self) -> str | None:
        """``--workspace=N`` (MiB, before 8.4) or the workspace pool of ``--memPoolSize``, as written."""
        if "workspace" in self.options:
            return str(self.options["workspace"])
        pools = self.options.get("memPoolSize")
        if isinstance(pools, str):
            for pool in pools.split(","):
                name, _, size = pool.partition(":")
                if name.strip() == "workspace":
                    return size.strip()
        return None

    def metric(self, name: str) -> Distribution | None:
        return self.metrics.get(name)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, plus the derived properties."""
        data = dataclasses.asdict(self)
        data["version"] = None if self.version is None else list(self.version)
        data["trace"] = [dataclasses.asdict(t) for t in self.trace]
        data["warnings"] = list(self.warnings)
        data.update(
            version_str=self.version_str,
            format_hint=self.format_hint,
            iterations=self.iterations,
            precision_flags=list(self.precision_flags),
            workspace=self.workspace,
        )
        return data


def decode_version_code(code: int) -> tuple[int, int, int]:
    """``8201`` -> (8, 2, 1); ``100900`` -> (10, 9, 0): 10.x widened the minor/patch fields."""
    if code >= 100000:
        return code // 10000, code // 100 % 100, code % 100
    return code // 1000, code // 100 % 10, code % 100


def parse_options(command: str) -> dict[str, str | bool]:
    """``--key=value`` -> {"key": "value"}, bare ``--flag`` -> {"flag": True}; the program is skipped."""
    try:
        words = shlex.split(command)
    except ValueError:
        # An unbalanced quote in a trimmed log must not lose the rest of the options.
        words = command.split()
    options: dict[str, str | bool] = {}
    for word in words[1:]:
        if word.startswith("--"):
            key, sep, value = word[2:].partition("=")
            options[key] = value if sep else True
    return options


def parse_trtexec_log(text: str) -> TrtexecResult:
    """Parse trtexec's output; DeployError when the performance summary is missing or incomplete."""
    if not isinstance(text, str):
        raise TypeError(f"parse_trtexec_log needs the log text (str), got {type(text).__name__}")
    section: str | None = None
    seen_summary = False
    sections: dict[str, dict[str, str]] = {}
    metrics: dict[str, Distribution] = {}
    throughput: float | None = None
    totals: dict[str, float] = {}
    trace: list[TraceAverage] = []
    trace_window: int | None = None
    warnings: list[str] = []
    banner: tuple[str, int, str | None, str | None] | None = None
    line_version: tuple[int, int, int] | None = None
    cv: float | None = None

    for raw in text.splitlines():
        banner_match = _BANNER_RE.search(raw)
        if banner_match:
            # RUNNING opens a log and PASSED/FAILED closes it; the closing status wins.
            banner = (banner_match[1], int(banner_match[2]), banner_match[3], banner_match[4])
            continue
        prefix = _PREFIX_RE.match(raw.rstrip())
        assert prefix is not None  # the pattern matches any line
        severity, body = prefix[1], prefix[2].strip()
        if not body:
            continue
        if severity == "W":
            # trtexec wraps one warning over several [W] lines; the continuation is indented.
            if warnings and not body.startswith("*") and prefix[2].startswith(" "):
                warnings[-1] += " " + body
            else:
                warnings.append(body)
            cv_match = _CV_RE.search(body)
            if cv_match:
                cv = float(cv_match[1])
            continue
        header = _SECTION_RE.match(body)
        if header:
            section = header[1]
            seen_summary = seen_summary or section == _SUMMARY
            continue
        trace_match = _TRACE_RE.match(body)
        if trace_match:
            trace.append(
                TraceAverage(
                    runs=int(trace_match[1]),
                    gpu_latency_ms=float(trace_match[2]),
                    host_latency_ms=float(trace_match[3]),
                    end_to_end_ms=None if trace_match[4] is None else float(trace_match[4]),
                    enqueue_ms=float(trace_match[5]),
                )
            )
            continue
        header_match = _TRACE_HEADER_RE.match(body)
        if header_match:
            trace_window = int(header_match[1])
            continue
        version_match = _VERSION_LINE_RE.match(body)
        if version_match:
            line_version = (int(version_match[1]), int(version_match[2]), int(version_match[3]))
            continue
        if section == _SUMMARY:
            if _parse_summary_line(body, metrics, totals):
                continue
            tp = _THROUGHPUT_RE.match(body)
            if tp:
                throughput = float(tp[1])
            continue
        kv = _KEY_VALUE_RE.match(body)
        if kv and section is not None:
            sections.setdefault(section, {})[kv[1]] = kv[2]

    if not seen_summary:
        raise DeployError(
            "no 'Performance summary' in the trtexec output: the run failed or was cut off; see the log"
        )
    missing = [name for name, ok in (("Throughput", throughput is not None), ("Latency", "latency" in metrics)) if not ok]
    if missing:
        raise DeployError(
            f"incomplete 'Performance summary' in the trtexec output (no {' or '.join(repr(m) for m in missing)} "
            "line): the log was cut off; see the log"
        )
    assert throughput is not None

    version_code = banner[1] if banner else None
    banner_version = decode_version_code(version_code) if version_code is not None else None
    if line_version and banner_version and line_version != banner_version:
        raise DeployError(
            f"the trtexec log contradicts itself: 'TensorRT version: {'.'.join(map(str, line_version))}' "
            f"but banner [TensorRT v{version_code}]; is it two logs concatenated?"
        )
    command = banner[3].strip() if banner and banner[3] else None
    device_info = sections.get("Device Information", {})
    return TrtexecResult(
        version=line_version or banner_version,
        version_code=version_code,
        build=banner[2] if banner else None,
        status=banner[0] if banner else None,
        command=command,
        options=parse_options(command) if command else {},
        device=device_info.get("Selected Device") or device_info.get("Device"),
        throughput_qps=throughput,
        metrics=metrics,
        total_host_walltime_s=totals.get("Host Walltime"),
        total_gpu_compute_time_s=totals.get("GPU Compute Time"),
        gpu_compute_cv_percent=cv,
        trace=tuple(trace),
        trace_window=trace_window,
        warnings=tuple(warnings),
        sections=sections,
    )


def _parse_summary_line(body: str, metrics: dict[str, Distribution], totals: dict[str, float]) -> bool:
    total = _TOTAL_RE.match(body)
    if total:
        totals[total[1]] = float(total[2])
        return True
    stat = _STAT_LINE_RE.match(body)
    if not stat:
        return False
    name = stat[1].strip()
    values: dict[str, float] = {}
    percentiles: dict[str, float] = {}
    for item in _STAT_ITEM_RE.finditer(stat[2]):
        if item[4] != "ms":
            raise DeployError(f"unexpected unit {item[4]!r} in trtexec summary line {body!r}; expected ms")
        if item[2] is not None:
            percentiles[item[2]] = float(item[3])
        else:
            values[item[1]] = float(item[3])
    absent = [k for k in ("min", "max", "mean", "median") if k not in values]
    if absent:
        raise DeployError(f"trtexec summary line {body!r} lacks {absent}: the log is damaged or a new format")
    key = _KNOWN_METRICS.get(name) or re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    metrics[key] = Distribution(percentiles=percentiles, **values)
    return True


_METRIC_CHOICES = ("latency", "gpu_compute_time", "end_to_end_host_latency")


def trtexec_latency_dict(
    result: TrtexecResult, *, metric: str = "latency", batch_size: int = 1, where: str = "trtexec"
) -> dict[str, Any]:
    """The LatencyStats fields from a trtexec result, None where the log does not give a value.

    ``metric="latency"`` (default) is trtexec's ``Latency`` line: H2D copy + GPU compute + D2H copy
    per query. That is what the ONNX Runtime runner times (``run`` with host inputs and outputs),
    and it exists in every version. ``gpu_compute_time`` is kernel time only (lower; no copies);
    ``end_to_end_host_latency`` (up to 8.3) adds the wait between queries when several are in flight.

    Not in any summary, hence None: ``std_ms`` (except for GPU compute time when trtexec printed its
    coefficient of variance), ``warmup_runs`` (trtexec warms up for a duration, not a count),
    ``threads``; p90/p95 before 8.5. ``runs`` is the derived iteration count (see TrtexecResult).
    ``throughput_ips`` follows LatencyStats (batch x 1000 / mean), not trtexec's qps, which counts
    overlapping queries and so is not the same quantity.
    """
    if metric not in _METRIC_CHOICES:
        raise ValueError(f"unknown metric {metric!r}; choose one of {list(_METRIC_CHOICES)}")
    dist = result.metrics.get(metric)
    if dist is None:
        raise DeployError(
            f"the trtexec log has no {metric!r} statistics (TensorRT {result.version_str or 'unknown'}); "
            f"use metric='latency'"
        )
    std = None
    if metric == "gpu_compute_time" and result.gpu_compute_cv_percent is not None:
        std = result.gpu_compute_cv_percent / 100.0 * dist.mean
    return {
        "median_ms": dist.median,
        "mean_ms": dist.mean,
        "std_ms": std,
        "min_ms": dist.min,
        "max_ms": dist.max,
        "p90_ms": _percentile(dist, 90),
        "p95_ms": _percentile(dist, 95),
        "p99_ms": _percentile(dist, 99),
        "runs": result.iterations,
        "warmup_runs": None,
        "batch_size": batch_size,
        "throughput_ips": batch_size * 1000.0 / dist.mean,
        "runtime": "tensorrt" if result.version_str is None else f"tensorrt {result.version_str}",
        "provider": "trtexec",
        "threads": None,
        "where": where,
        "method": "measured",
        # trtexec prints a summary, not single runs: no interval of the median can be made here.
        "precision": MedianPrecision.not_adaptive(
            result.iterations, "trtexec times its own iterations and duration").to_dict()
        if result.iterations else None,
    }


def stats_from_trtexec(
    result: TrtexecResult,
    *,
    metric: str = "latency",
    batch_size: int = 1,
    where: str = "trtexec",
    warmup_runs: int = 0,
    std_ms: float | None = None,
) -> LatencyStats:
    """A LatencyStats from a trtexec result; DeployError naming the fields the log lacks.

    ``warmup_runs`` and ``std_ms`` fill the two values no trtexec summary prints; with the default
    ``std_ms=None`` only GPU compute time of a log with trtexec's instability warning has one.
    Logs before 8.5 (one percentile) cannot give p90/p95: use ``trtexec_latency_dict`` for them.
    """
    data = trtexec_latency_dict(result, metric=metric, batch_size=batch_size, where=where)
    data["warmup_runs"] = warmup_runs
    if std_ms is not None:
        data["std_ms"] = std_ms
    absent = [k for k, v in data.items() if v is None and k not in ("threads", "precision")]
    if absent:
        raise DeployError(
            f"the trtexec log cannot fill LatencyStats fields {absent} (TensorRT "
            f"{result.version_str or 'unknown'}, percentiles {list(result.percentile_keys)}); "
            "use trtexec_latency_dict, or run trtexec >= 8.5 with --percentile=90,95,99"
        )
    return LatencyStats.from_dict(data)


def _percentile(dist: Distribution, p: int) -> float | None:
    for key, value in dist.percentiles.items():
        if float(key) == p:
            return value
    return None
