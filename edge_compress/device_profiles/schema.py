"""Typed device profiles: strict, frozen pydantic models (edge_compress.config_base), one per YAML section.

The models are the schema: adding a key means adding a field. A value's extra rules (ranges, fixed
choices) are `Rule`s in its annotation, whose words the error messages quote ("an integer >= 1").
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import PrivateAttr, ValidationError, model_validator

from edge_compress.config_base import Config, Items, Rule, RuleBroken, error_line, excerpt

__all__ = ["SCHEMA_VERSION", "CONFIDENCES", "ENGINES", "PRECISIONS", "METHODS", "LAYER_KINDS", "COST_FACTORS",
           "ProfileError", "Fact", "Hardware", "Runtime", "Pruning", "Budget", "SshTarget",
           "Measurement", "KindEfficiency", "OutOfSample", "FitMachine", "CostFit", "CostModel", "DeviceProfile",
           "parse_profile", "parse_section"]

SCHEMA_VERSION = 1
CONFIDENCES = ("high", "medium-high", "medium", "low", "estimate", "measured")
ENGINES = ("onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
METHODS = ("local", "ssh", "none")
LAYER_KINDS = ("conv_kxk", "conv_1x1", "depthwise", "linear")
COST_FACTORS = ("compute_efficiency", "memory_efficiency", "layer_overhead_ms", "network_overhead_ms",
                "channel_alignment") + tuple(f"kind_efficiency.{k}" for k in LAYER_KINDS)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class ProfileError(ValueError):
    """A profile that cannot be used; the message is one line naming the file, the key and the fix."""


def _one_of(choices: tuple[str, ...]) -> Any:
    return Annotated[Literal[choices], Rule("one of " + ", ".join(choices))]


def _at_least(low: float, kind: type = int) -> Any:
    words = "an integer" if kind is int else "a number"
    return Rule(f"{words} >= {low:g}", lambda v: v >= low)


_NON_EMPTY = Rule("a non-empty string", lambda v: bool(v.strip()))
_NonEmpty = Annotated[str, _NON_EMPTY]
_Count = Annotated[int, _at_least(0)]
_Positive = Annotated[int, _at_least(1)]
_Opset = Annotated[int, _at_least(7)]
_NonNegative = Annotated[float, _at_least(0, float)]
_ABOVE_0 = Rule("a number > 0", lambda v: v > 0)
# Efficiencies scale a peak down; 0 would make every layer infinitely slow.
_FRACTION = Rule("a number in (0, 1]", lambda v: 0 < v <= 1)


class Fact(Config):
    """One published or derived number (or description) together with where it comes from.
    null = unknown or not supported; the source says which."""

    value: float | int | str | None
    source: _NonEmpty
    confidence: _one_of(CONFIDENCES)


# What a Fact's value must hold for a given key (the Fact itself carries any kind).
_TEXT = Rule("a string", lambda v: isinstance(v, str), attr="value")
_NUMBER = Rule("a number >= 0 or null", lambda v: isinstance(v, (int, float)) and v >= 0, attr="value")
_COUNT = Rule("an integer >= 0 or null", lambda v: isinstance(v, int) and v >= 0, attr="value")


class Hardware(Config):
    cpu: Annotated[Fact, _TEXT]
    gpu: Annotated[Fact | None, _TEXT] = None
    fp32_gflops: Annotated[Fact, _NUMBER]
    fp16_gflops: Annotated[Fact, _NUMBER]
    int8_tops: Annotated[Fact, _NUMBER]
    memory_bandwidth_gbps: Annotated[Fact, _NUMBER]
    memory_capacity_mb: Annotated[Fact, _NUMBER]
    dla_cores: Annotated[Fact, _COUNT]


class Runtime(Config):
    engine: _one_of(ENGINES)
    version: _NonEmpty
    precision: _one_of(PRECISIONS)
    opset: _Opset
    max_opset: _Opset
    execution_providers: Items[str]
    require_provider: bool
    trtexec_path: str | None = None
    workspace_mb: Annotated[int | None, _at_least(1)] = None


class Pruning(Config):
    channel_multiple: _Positive
    min_channels: _Positive


class Budget(Config):
    """A target's default budget, used when the command line gives none; null = no limit."""

    latency_ms: Annotated[float | None, _ABOVE_0] = None
    memory_mb: Annotated[float | None, _ABOVE_0] = None


class SshTarget(Config):
    """A device reached over SSH: `user@host`, port `port`, the benchmark run by `python` there."""

    host: _NonEmpty
    user: _NonEmpty
    port: Annotated[int, Rule("an integer in 1..65535", lambda v: 1 <= v <= 65535)]
    key_file: str | None = None
    # The folder on the device under which the SSH runner makes (and removes) each run's temporary folder,
    # for devices whose /tmp is small or read-only; null: /tmp.
    workdir: Annotated[str | None, _NON_EMPTY] = None
    python: _NonEmpty = "python3"

    @property
    def destination(self) -> str:
        """`user@host` as ssh takes it (the port goes in `-p`)."""
        return f"{self.user}@{self.host}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


class Measurement(Config):
    """How the target is timed. ``timed_runs``: the run count where timing is not adaptive (precision_pct
    null, or a tool / device that times a fixed count itself). Adaptive: runs until the 95 % interval of
    the median (of the ratio, for two models timed interleaved) is within ``precision_pct`` % of it, at
    least ``min_runs``, at most ``max_runs`` runs and ``max_seconds`` of timed runs."""

    method: _one_of(METHODS)
    batch_size: _Positive
    warmup_runs: _Count
    timed_runs: _Positive
    threads: Annotated[int | None, _at_least(1)] = None
    ssh: SshTarget | None = None
    precision_pct: Annotated[float | None, Rule("a number in (0, 100) or null (a fixed timed_runs)",
                                                lambda v: v is None or 0 < v < 100)] = 1.0
    # 10 runs are the fewest whose order statistics give a 95 % interval narrower than min..max.
    min_runs: Annotated[int, _at_least(10)] = 20
    max_runs: _Positive = 400
    max_seconds: Annotated[float, _ABOVE_0] = 30.0

    @model_validator(mode="after")
    def _run_caps(self) -> Measurement:
        if self.min_runs > self.max_runs:
            raise RuleBroken(f"key 'measurement.min_runs' is {self.min_runs} but measurement.max_runs is "
                             f"{self.max_runs}; make min_runs <= max_runs")
        return self


class KindEfficiency(Config):
    """Compute efficiency per layer kind; a kind left out uses cost_model.compute_efficiency."""

    conv_kxk: Annotated[float | None, _FRACTION] = None
    conv_1x1: Annotated[float | None, _FRACTION] = None
    depthwise: Annotated[float | None, _FRACTION] = None
    linear: Annotated[float | None, _FRACTION] = None


class OutOfSample(Config):
    """One network with a published latency that the fit did not see, and how far the fit misses it."""

    network: _NonEmpty
    published_ms: Annotated[float, _ABOVE_0]
    predicted_ms: _NonNegative
    error_pct: float


class FitMachine(Config):
    """The CPU a measured fit ran on: factors fitted on one CPU do not describe another."""

    cpu: _NonEmpty
    isa: _NonEmpty
    cores: _Positive


class CostFit(Config):
    """Provenance of fitted factors: a fit without its data and error is not to be trusted."""

    data: _NonEmpty
    # Quoted in YAML: an unquoted date would load as a date object, not the text that was written.
    date: Annotated[str, Rule('a quoted date "YYYY-MM-DD"', lambda v: bool(_DATE.fullmatch(v)))]
    command: str | None = None
    samples: _Positive
    free_factors: Annotated[Items[str], Rule("a list of factor names out of " + ", ".join(COST_FACTORS),
                                             lambda v: bool(v) and all(f in COST_FACTORS for f in v))]
    median_abs_error_pct: _NonNegative
    max_abs_error_pct: _NonNegative
    share_within_10pct: Annotated[float, Rule("a number in [0, 1]", lambda v: 0 <= v <= 1)]
    # Networks kept out of the fit: their errors are the out-of-sample check of the fitted factors.
    out_of_sample: Items[OutOfSample] = ()
    # Measured fits: the machine they were measured on (compared with this one before the factors are used).
    machine: FitMachine | None = None


class CostModel(Config):
    compute_efficiency: Annotated[float, _FRACTION]
    memory_efficiency: Annotated[float, _FRACTION]
    layer_overhead_ms: _NonNegative
    # Paid once per inference (session call, input/output copies), whatever the layers.
    network_overhead_ms: _NonNegative = 0.0
    kind_efficiency: KindEfficiency | None = None
    # Kernels that compute in channel blocks pad the channels up to the block (ONNX Runtime's NCHWc).
    channel_alignment: _Positive = 1
    # The rates the efficiencies are fractions of, where the hardware section has none that fits
    # (e.g. one thread of a multi-core CPU); null: the hardware peak at the runtime precision.
    reference_gflops: Annotated[Fact | None, _NUMBER] = None
    reference_gbps: Annotated[Fact | None, _NUMBER] = None
    fitted: bool
    source: _NonEmpty
    fit: CostFit | None = None

    @model_validator(mode="after")
    def _fit_given_when_fitted(self) -> CostModel:
        if self.fitted and self.fit is None:
            raise RuleBroken("missing key 'cost_model.fit', required when cost_model.fitted is true (give the "
                             "data, date, samples, free_factors and the fit's errors)")
        if not self.fitted and self.fit is not None:
            raise RuleBroken("key 'cost_model.fit' is given but cost_model.fitted is false; set fitted: true or "
                             "remove the fit block")
        return self


class DeviceProfile(Config):
    schema_version: Annotated[int, Rule(f"{SCHEMA_VERSION} (the only schema version so far)",
                                        lambda v: v == SCHEMA_VERSION)]
    name: Annotated[str, Rule("a non-empty name without spaces",
                              lambda v: bool(v) and not any(c.isspace() for c in v))]
    description: _NonEmpty
    extends: str | None = None
    notes: Items[str] = ()
    hardware: Hardware
    runtime: Runtime
    pruning: Pruning
    budget: Budget
    measurement: Measurement
    cost_model: CostModel
    # Where it was loaded from: not a YAML key, not in to_dict(), not part of equality.
    _source_file: str = PrivateAttr(default="")

    @property
    def source_file(self) -> str:
        return self._source_file

    @model_validator(mode="after")
    def _consistent(self) -> DeviceProfile:
        rt, m = self.runtime, self.measurement
        if rt.opset > rt.max_opset:
            raise RuleBroken(f"key 'runtime.opset' is {rt.opset} but runtime.max_opset is {rt.max_opset}; export "
                             f"at an opset the runtime's parser supports (<= {rt.max_opset})")
        if m.method == "ssh" and m.ssh is None:
            raise RuleBroken("missing key 'measurement.ssh', required when measurement.method is 'ssh' (give "
                             "host, user, port and optionally workdir; or use method 'none')")
        if rt.require_provider and rt.engine == "onnxruntime" and not rt.execution_providers:
            raise RuleBroken("key 'runtime.require_provider' is true but runtime.execution_providers is empty; "
                             "name the provider to require")
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DeviceProfile):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(tuple(self.__dict__.values()))

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON- and YAML-safe dict with every key, in schema order (source_file left out)."""
        return self.model_dump(mode="json")


def parse_section(model: type[Config], data: Any, where: str, key: str = "") -> Any:
    """`model` built from `data`, the mapping at dotted `key` of profile file `where`; ProfileError naming
    the file, the key and the fix otherwise."""
    if not isinstance(data, dict):
        what = f"key '{key}'" if key else "the top level"
        raise ProfileError(f"profile {where}: {what} must be a mapping, got {excerpt(data)}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(f"profile {where}: {error_line(exc, model, key, data)}") from None


def parse_profile(data: Any, where: str, source_file: str) -> DeviceProfile:
    profile = parse_section(DeviceProfile, data, where)
    profile._source_file = source_file
    return profile
