"""Numbers for one model on one target: latency (measured where the target can be run, predicted
otherwise), memory (predicted), MACs and parameters (counted).

Measuring goes through the same stages as the final artifact (ONNX at the profile's opset, the runner
``deploy.make_runner`` picks for the profile: ONNX Runtime with its providers and threads, TensorRT, or
either on the device over SSH), so the loop prunes against the number the report will show.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from edge_compress.deploy import (
    LatencyStats,
    Runner,
    RunnerConfig,
    SshConnection,
    StopRule,
    check_device,
    make_runner,
    measure_interleaved,
)
from edge_compress.export import export_onnx

from .search.budget import Metrics
from .costmodel.model import BYTES_PER_ELEMENT, factors_from_profile, layer_costs, predict_latency_ms, predict_memory_mb
from .errors import InputError
from .output import clean_dead_runs, remove_marked, write_marker

QUICK_WARMUP, QUICK_RUNS = 10, 60  # inside the pruning loop; the final number uses the profile's counts


def stop_rule(measurement, quick: bool = False, precision_pct: float | None = None) -> StopRule | int:
    """What a full (or, ``quick``, an in-loop) measurement runs: the profile's adaptive rule, or its fixed
    ``timed_runs`` when its precision_pct is null. ``precision_pct`` overrides the profile's. In the loop
    the rule asks for half the precision within QUICK_RUNS: a round only needs to tell a clear change."""
    pct = precision_pct if precision_pct is not None else measurement.precision_pct
    if pct is None:
        return QUICK_RUNS if quick else measurement.timed_runs
    if quick:
        return StopRule(precision_pct=min(2 * pct, 50.0), min_runs=min(measurement.min_runs, QUICK_RUNS),
                        max_runs=QUICK_RUNS, max_seconds=measurement.max_seconds, fixed_runs=QUICK_RUNS)
    return StopRule(precision_pct=pct, min_runs=measurement.min_runs, max_runs=measurement.max_runs,
                    max_seconds=measurement.max_seconds, fixed_runs=measurement.timed_runs)


@dataclass
class Evaluation:
    metrics: Metrics
    stats: LatencyStats | None   # present when measured
    layers: list                 # LayerCost list (empty for TorchScript)
    reference: LatencyStats | None = None   # the original, measured interleaved with this model (paired)


class LatencyEvaluator:
    """Measures a model's latency with the profile's runner where the target can be run (here, or on
    ``device`` / the profile's SSH device), predicts it with the cost model otherwise."""

    def __init__(self, profile, example_input: torch.Tensor, workdir: Path | None = None,
                 device: SshConnection | None = None, precision_pct: float | None = None):
        self.profile = profile
        self.precision_pct = precision_pct   # overrides the profile's measurement.precision_pct
        self.example_input = example_input
        self.factors = factors_from_profile(profile)
        self.device = device or _profile_device(profile)   # measure on this device over SSH
        if profile.measurement.method == "ssh" and self.device is None:
            raise InputError(f"target {profile.name} measures over SSH but names no device; add measurement.ssh "
                             "to the profile or pass --device user@host[:port]")
        self.runner_config: RunnerConfig | None = None
        if self.device is not None:
            self.runner_config = RunnerConfig.from_profile(profile, method="ssh")
            # Reach the device and check its tools now, before minutes of pruning depend on it.
            self.device_tools = check_device(self.runner_config, self.device)
        elif profile.measurement.method == "local":
            self.runner_config = RunnerConfig.from_profile(profile)
        self.measured = self.runner_config is not None
        if not self.measured and not self.factors.usable:
            raise InputError(f"target {profile.name} cannot be measured from here and its profile lacks the peak "
                             "compute or memory bandwidth needed to predict latency; add them to the profile")
        self._tmp = _eval_tempdir() if workdir is None else None
        self.workdir = Path(workdir or self._tmp.name)
        self.reference_onnx: Path | None = None

    @property
    def predicted_label(self) -> str:
        fitted = "fitted to measurements" if self.factors.fitted else "factors NOT fitted to measurements"
        return f"predicted: per-layer roofline cost model of profile {self.profile.name} ({fitted})"

    def evaluate(self, model: nn.Module, full: bool = False, onnx_path: Path | None = None) -> Evaluation:
        costs, memory, macs, params = self._counted(model)
        stats = None
        if self.measured:
            stats = self.measure(model, full, onnx_path)
            latency, kind = stats.median_ms, measured_kind(stats)
        else:
            latency, kind = predict_latency_ms(costs, self.factors), self.predicted_label
            if latency is None:
                raise InputError("latency cannot be predicted for a TorchScript model; pass a state dict with --arch")
        return Evaluation(Metrics(float(latency), kind, memory, macs, params), stats, costs)

    def _counted(self, model: nn.Module):
        """Per-layer costs, predicted memory, MACs and parameters: what needs no run."""
        is_script = isinstance(model, torch.jit.ScriptModule)
        costs = [] if is_script else layer_costs(model, self.example_input)
        params = sum(p.numel() for p in model.parameters())
        macs = sum(c.macs for c in costs) if costs else None
        bpe = BYTES_PER_ELEMENT[self.profile.runtime.precision]
        memory = predict_memory_mb(costs, params, bpe) if costs else params * bpe / 2**20
        return costs, float(memory), macs, int(params)

    def measure(self, model: nn.Module, full: bool, onnx_path: Path | None = None) -> LatencyStats:
        if onnx_path is None:
            onnx_path = self.workdir / "eval.onnx"
            export_onnx(model, self.example_input, onnx_path, opset=self.profile.runtime.opset)
        return self.measure_onnx(onnx_path, full)

    @property
    def can_pair(self) -> bool:
        """Whether a model can be timed interleaved with the original (a runner that times in this process)."""
        return self.measured and self.device is None and self._runner(self.workdir / "eval.onnx").interleavable

    def set_reference(self, model: nn.Module) -> None:
        """Keep the original's ONNX so that paired evaluations time it interleaved with each candidate."""
        if not self.can_pair:
            raise ValueError("paired measurement needs a target measured locally")
        self.reference_onnx = self.workdir / "reference.onnx"
        export_onnx(model, self.example_input, self.reference_onnx, opset=self.profile.runtime.opset)

    def evaluate_paired(self, model: nn.Module) -> Evaluation:
        """A full evaluation whose latency was timed interleaved with the original (see set_reference)."""
        onnx_path = self.workdir / "eval.onnx"
        export_onnx(model, self.example_input, onnx_path, opset=self.profile.runtime.opset)
        costs, memory, macs, params = self._counted(model)
        stats, ref = self.measure_paired(onnx_path)
        return Evaluation(Metrics(stats.median_ms, measured_kind(stats), memory, macs, params), stats, costs, ref)

    def measure_paired(self, onnx_path: Path) -> tuple[LatencyStats, LatencyStats]:
        """The model at ``onnx_path`` and the original, interleaved, with the profile's full run counts."""
        m = self.profile.measurement
        with self._runner(onnx_path) as a, self._runner(self.reference_onnx) as b:
            stats, ref = measure_interleaved([a, b], [self._feed(a), self._feed(b)], warmup_runs=m.warmup_runs,
                                             timed_runs=stop_rule(m, precision_pct=self.precision_pct))
        return stats, ref

    def _runner(self, onnx_path: Path) -> Runner:
        return make_runner(onnx_path, self.runner_config, self.device, self.workdir)

    def _feed(self, runner: Runner) -> dict:
        return {runner.input_names[0]: self.example_input.numpy()}

    def measure_onnx(self, onnx_path: Path, full: bool) -> LatencyStats:
        m = self.profile.measurement
        warmup = m.warmup_runs if full else QUICK_WARMUP
        runs = stop_rule(m, quick=not full, precision_pct=self.precision_pct)
        with self._runner(onnx_path) as runner:
            return runner.measure(self._feed(runner), warmup_runs=warmup, timed_runs=runs)

    def close(self) -> None:
        if self._tmp is not None:
            remove_marked(Path(self._tmp.name))   # marker last: a kill part-way leaves it for the next run
            self._tmp.cleanup()


def _profile_device(profile) -> SshConnection | None:
    ssh = profile.measurement.ssh
    if profile.measurement.method != "ssh" or ssh is None:
        return None
    return SshConnection(ssh)


def measured_kind(stats: LatencyStats) -> str:
    """How a measured latency was obtained, in the words every report and summary uses."""
    how = "" if stats.method == "measured" else f" ({stats.method.removeprefix('measured, ')})"
    return (f"measured: median of {stats.runs} runs{_precision_words(stats.precision)} after {stats.warmup_runs} "
            f"warm-up{how}, {stats.runtime} "
            f"{stats.provider}, {stats.threads} thread(s), batch {stats.batch_size}, {stats.where}")


def _precision_words(p) -> str:
    """' (±0.8 % at 95 % confidence, stopped on precision)'; '' when no interval is known."""
    if p is None or not p.short():
        return ""
    what = "of the ratio to the original, " if p.decided_by == "ratio" else ""
    why = {"precision": "reached", "max_runs": "stopped at max_runs", "time_cap": "stopped at the time cap",
           "fixed": "fixed run count"}.get(p.stopped_on, p.stopped_on)
    return f" ({p.short()} {what}at {100 * p.confidence:.0f} % confidence, {why})"


EVAL_TMP_PREFIX = "compress-eval-"


def _eval_tempdir() -> tempfile.TemporaryDirectory:
    """The evaluator's scratch folder, marked with this process's pid; those of killed runs are removed first
    (only folders of this user that carry the marker of a process gone from this host)."""
    clean_dead_runs(Path(tempfile.gettempdir()), EVAL_TMP_PREFIX)
    tmp = tempfile.TemporaryDirectory(prefix=EVAL_TMP_PREFIX)
    write_marker(Path(tmp.name))
    return tmp
