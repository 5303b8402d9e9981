"""The runner interface every runtime implements (modelled on Polygraphy's BaseRunner).

``Runner``: ``activate()`` / ``measure(feed, ...)`` / ``deactivate()``, a context manager; every
measurement returns ``LatencyStats``. Runtimes whose timing is taken by a tool (trtexec, a benchmark
on a device over SSH) implement it directly. ``InferenceRunner``: runtimes that run the model in this
process (ONNX Runtime, the TensorRT Python API) override ``_activate_impl``, ``_infer_impl`` and
``_deactivate_impl``; timing, statistics and the interleaved timing of several models live here once,
so that every runtime reports latency the same way.
"""

from __future__ import annotations

import abc
import dataclasses
import gc
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import onnx

from edge_compress.deploy.environment import local_where
from edge_compress.deploy.errors import RunnerStateError
from edge_compress.deploy.runners.adaptive import CONFIDENCE, FIXED, MedianPrecision, StopRule, half_width_pct, ratio_precision
from edge_compress.deploy.runners.stats import LatencyStats

# What ``measure`` is told to run: a fixed count, or a rule that stops when the median is known well enough.
TimedRuns = int | StopRule


class Runner(abc.ABC):
    """Loads a model on ``activate()``, times it with ``measure(feed, ...)``, frees it on ``deactivate()``."""

    # Whether ``measure_interleaved`` can time this runner in blocks alternating with others: only
    # runners that time single runs in this process can.
    interleavable = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_active = False

    @abc.abstractmethod
    def _activate_impl(self) -> None: ...

    @abc.abstractmethod
    def _deactivate_impl(self) -> None: ...

    @abc.abstractmethod
    def measure(
        self, feed: Mapping[str, np.ndarray], warmup_runs: int, timed_runs: TimedRuns, *,
        batch_size: int | None = None
    ) -> LatencyStats:
        """Timed runs after ``warmup_runs`` untimed ones; ``feed`` maps input names to arrays. ``timed_runs``: a
        count, or a ``StopRule`` (runners that cannot stop adaptively run its ``fixed_runs`` and say so in
        the statistics' ``precision``)."""

    @property
    def input_names(self) -> list[str]:
        """The model's input names, in order (the keys a feed must have): those `_activate_impl` read into
        `self._input_names`."""
        self._require_active("input_names")
        return list(self._input_names)

    @property
    @abc.abstractmethod
    def runtime(self) -> str:
        """Runtime and version, e.g. ``"onnxruntime 1.31.1"``."""

    @property
    def where(self) -> str:
        """Machine the model runs on; remote runners override this."""
        return local_where()

    def activate(self) -> None:
        if self.is_active:
            raise RunnerStateError(f"{self.name} is already active")
        self._activate_impl()
        self.is_active = True

    def deactivate(self) -> None:
        self._require_active("deactivate")
        try:
            self._deactivate_impl()
        finally:
            self.is_active = False

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.deactivate()

    def _require_active(self, action: str) -> None:
        if not self.is_active:
            raise RunnerStateError(f"{self.name}: {action} needs an active runner; call activate()")


class InferenceRunner(Runner):
    """A runner that runs the model in this process: ``infer(feed)`` returns the outputs by name."""

    interleavable = True

    def __init__(self, name: str) -> None:
        super().__init__(name)
        # Wall time of the latest ``infer`` call, like Polygraphy's ``last_inference_time``.
        self.last_inference_time_ms: float | None = None
        # The calling thread's CPU time of each timed run of the latest measurement: with one intra-op
        # thread the runtime computes on this thread, so CPU time leaves out waiting for a core, which
        # on a loaded machine moves the wall-clock median.
        self.cpu_samples_ms: list[float] = []

    # -- what a backend provides ---------------------------------------------------------------

    @abc.abstractmethod
    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @property
    @abc.abstractmethod
    def provider(self) -> str:
        """The execution provider / device that actually runs the model."""

    @property
    def threads(self) -> int | None:
        """Threads the runtime was pinned to; None means the runtime's default."""
        return None

    # -- the public interface ------------------------------------------------------------------

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; ``feed`` maps every input name to an array. Returns outputs by name."""
        self._require_active("infer")
        self._check_feed(feed)
        start = time.perf_counter()
        outputs = self._infer_impl(feed)
        self.last_inference_time_ms = (time.perf_counter() - start) * 1e3
        return outputs

    def measure(
        self,
        feed: Mapping[str, np.ndarray],
        warmup_runs: int,
        timed_runs: TimedRuns,
        *,
        batch_size: int | None = None,
    ) -> LatencyStats:
        """Time calls of ``infer`` after ``warmup_runs`` untimed ones: ``timed_runs`` of them, or, given a
        ``StopRule``, until the median's interval is as narrow as it asks (within its run and time caps).

        Warm-up matters: first runs pay for memory allocation, lazy kernel selection and (for the
        TensorRT EP) the engine build. ``batch_size`` defaults to the first input's leading
        dimension.
        """
        (stats,) = measure_interleaved([self], [feed], warmup_runs, timed_runs, batch_size=batch_size)
        return stats

    def _warm_up(self, feed: Mapping[str, np.ndarray], runs: int) -> None:
        self._require_active("measure")
        self.cpu_samples_ms = []
        for _ in range(runs):
            self.infer(feed)

    def _timed(self, feed: Mapping[str, np.ndarray], runs: int) -> list[float]:
        samples_ms: list[float] = []
        # A garbage-collector pass inside the loop would show up as a fake latency outlier;
        # timeit disables it for the same reason.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for _ in range(runs):
                cpu_start = time.thread_time()
                self.infer(feed)
                self.cpu_samples_ms.append((time.thread_time() - cpu_start) * 1e3)
                assert self.last_inference_time_ms is not None
                samples_ms.append(self.last_inference_time_ms)
        finally:
            if gc_was_enabled:
                gc.enable()
        return samples_ms

    def _stats(self, samples_ms, warmup_runs, batch_size, feed, method: str = "measured",
               precision: MedianPrecision | None = None) -> LatencyStats:
        return LatencyStats.from_samples(
            samples_ms,
            warmup_runs=warmup_runs,
            batch_size=batch_size if batch_size is not None else self._batch_size_of(feed),
            runtime=self.runtime,
            provider=self.provider,
            threads=self.threads,
            where=self.where,
            method=method,
            precision=precision,
        )

    # -- helpers -------------------------------------------------------------------------------

    def _check_feed(self, feed: Mapping[str, np.ndarray]) -> None:
        expected = self.input_names
        missing = [n for n in expected if n not in feed]
        extra = [n for n in feed if n not in expected]
        if missing or extra:
            raise ValueError(
                f"{self.name}: feed does not match the model inputs {expected}: "
                f"missing {missing}, unexpected {extra}"
            )

    def _batch_size_of(self, feed: Mapping[str, np.ndarray]) -> int:
        first = np.asarray(feed[self.input_names[0]])
        return int(first.shape[0]) if first.ndim >= 1 and first.shape[0] >= 1 else 1


INTERLEAVE_BLOCK = 10


def onnx_input_names(path: Path) -> list[str]:
    """The graph inputs of an ONNX model that are not initializers, read without its weights."""
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    return [i.name for i in graph.input if i.name not in weights]


def check_counts(warmup_runs: int, timed_runs: TimedRuns) -> None:
    if isinstance(warmup_runs, bool) or not isinstance(warmup_runs, int) or warmup_runs < 0:
        raise ValueError(f"warmup_runs must be an int >= 0, got {warmup_runs!r}")
    if isinstance(timed_runs, StopRule):
        return
    if isinstance(timed_runs, bool) or not isinstance(timed_runs, int) or timed_runs < 1:
        raise ValueError(f"timed_runs must be an int >= 1 or a StopRule, got {timed_runs!r}")


def fixed_count(timed_runs: TimedRuns) -> int:
    """The run count of a runner that cannot stop adaptively: the count, or the rule's ``fixed_runs``."""
    return timed_runs.fixed_runs if isinstance(timed_runs, StopRule) else timed_runs


def not_adaptive(stats: LatencyStats, timed_runs: TimedRuns, why: str) -> LatencyStats:
    """``stats`` of a tool-timed measurement, with a precision record that says it was not adaptive and why."""
    note = f"asked for adaptive timing, but {why}" if isinstance(timed_runs, StopRule) else why
    return dataclasses.replace(stats, precision=MedianPrecision.not_adaptive(stats.runs, note))


def measure_interleaved(
    runners: Sequence[InferenceRunner],
    feeds: Sequence[Mapping[str, np.ndarray]],
    warmup_runs: int,
    timed_runs: TimedRuns,
    block: int = INTERLEAVE_BLOCK,
    shuffle_seed: int | None = None,
    batch_size: int | None = None,
) -> list[LatencyStats]:
    """Time several active runners in alternating blocks of ``block`` runs: ``timed_runs`` each, or, given a
    ``StopRule``, until every runner's per-pair ratio to the first (one runner: its median) is known to the
    rule's precision, within its run and time caps.

    On a shared machine the speed drifts over seconds (other tenants, clock boost); two models timed
    one after the other can differ by 20 % for that reason alone. Interleaved, both see the same
    drift, so their ratio holds even when each absolute number does not; the k-th runs of two models
    in a block form a pair. With ``shuffle_seed`` the runners take their turns in a new seeded order
    every block, so that with many models none always runs right after the same neighbour. Each
    runner's CPU-time samples stay in ``cpu_samples_ms``.
    """
    if len(runners) != len(feeds) or len(runners) < 1:
        raise ValueError("measure_interleaved needs one or more runners, each with its feed")
    not_here = [r.name for r in runners if not r.interleavable]
    if not_here:
        raise ValueError(f"{not_here} time themselves (a tool or a device does) and cannot be interleaved")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be an int >= 1, got {block!r}")
    check_counts(warmup_runs, timed_runs)
    rule = timed_runs if isinstance(timed_runs, StopRule) else None
    for r, feed in zip(runners, feeds):
        r._warm_up(feed, warmup_runs)
    samples: list[list[float]] = [[] for _ in runners]
    order = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    start = time.perf_counter()
    while True:
        done = len(samples[0])
        if rule is None:
            why = FIXED if done >= timed_runs else None
            n = min(block, timed_runs - done)
        else:
            why = rule.verdict(done, time.perf_counter() - start, deciding_pct(samples, rule.confidence))
            n = min(block, rule.next_block(done))
        if why is not None:
            break
        turns = order.permutation(len(runners)) if order is not None else range(len(runners))
        for i in turns:
            samples[i].extend(runners[i]._timed(feeds[i], n))
    method = (f"measured, interleaved with {len(runners) - 1} other model(s) in blocks of {block} runs"
              if len(runners) > 1 else "measured")
    return [r._stats(acc, warmup_runs, batch_size, feed, method, _precision(samples, i, rule, why))
            for i, (r, feed, acc) in enumerate(zip(runners, feeds, samples))]


def deciding_pct(samples: Sequence[Sequence[float]], confidence: float) -> float | None:
    """What a stop rule compares with its precision: one runner's median half-width (%), or the widest
    half-width of the other runners' per-pair ratios to the first."""
    if len(samples[0]) == 0:
        return None
    if len(samples) == 1:
        return half_width_pct(samples[0], confidence)
    widths = [ratio_precision(s, samples[0], confidence)[3] for s in samples[1:]]
    return None if any(w is None for w in widths) else max(widths)


def _precision(samples: list[list[float]], i: int, rule: StopRule | None, why: str) -> MedianPrecision:
    """Runner i's median interval; with a partner (the first runner, or for the first the only other),
    the per-pair ratio i / partner, which decided an adaptive stop."""
    partner = 0 if i > 0 else (1 if len(samples) == 2 else None)
    if partner is None:
        return MedianPrecision.of(samples[i], rule, why,
                                  decided_by="ratio" if rule is not None and len(samples) > 1 else "median")
    confidence = rule.confidence if rule else CONFIDENCE
    if i == 0:   # the pair's precision is that of the ratio the stop rule watched (second / first), inverted
        r, lo, hi, width = ratio_precision(samples[partner], samples[0], confidence)
        ratio, low, high = 1.0 / r, (1.0 / hi if hi else None), (1.0 / lo if lo else None)
    else:
        ratio, low, high, width = ratio_precision(samples[i], samples[partner], confidence)
    return MedianPrecision.of(samples[i], rule, why, decided_by="ratio" if rule is not None else "median",
                              ratio=ratio, ratio_low=low, ratio_high=high, ratio_half_width_pct=width)
