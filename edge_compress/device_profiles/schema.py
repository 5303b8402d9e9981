"""Typed device profiles and the one strict parser that builds them from YAML data.

The dataclasses are the schema: `parse_dataclass` reads their fields and type hints, so adding a key
means adding a field. Extra rules on a value (ranges, fixed choices) live in the field's metadata,
where the parser finds them and can word the error message from them.
"""

from __future__ import annotations

import dataclasses
import math
import difflib
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Union

SCHEMA_VERSION = 1
CONFIDENCES = ("high", "medium-high", "medium", "low", "estimate", "measured")
ENGINES = ("onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
METHODS = ("local", "ssh", "none")


class ProfileError(ValueError):
    """A profile that cannot be used; the message is one line naming the file, the key and the fix."""


_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel, _EXCERPT.maxstring, _EXCERPT.maxother = 2, 60, 60
_EXCERPT.maxlist = _EXCERPT.maxtuple = _EXCERPT.maxdict = _EXCERPT.maxset = 4


def excerpt(value: Any, limit: int = 80) -> str:
    """A short repr of a value read from a file, for a one-line message: bounded work, at most `limit` chars.

    reprlib stops at a few items per level and a few levels, so a value that expands to millions of
    items (YAML aliases) costs no more than a small one.
    """
    text = _EXCERPT.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _rule(expect: str, ok: Callable[[Any], bool], default: Any = dataclasses.MISSING) -> Any:
    # `expect` replaces the plain type wording in errors, e.g. "an integer >= 1".
    return field(default=default, metadata={"expect": expect, "ok": ok})


def _one_of(choices: tuple[str, ...], default: Any = dataclasses.MISSING) -> Any:
    return _rule("one of " + ", ".join(choices), lambda v: v in choices, default)


def _at_least(low: float, kind: str = "an integer", default: Any = dataclasses.MISSING) -> Any:
    return _rule(f"{kind} >= {low:g}", lambda v: v >= low, default)


def _fraction() -> Any:
    # Efficiencies scale a peak down; 0 would make every layer infinitely slow.
    return _rule("a number in (0, 1]", lambda v: 0 < v <= 1)


def _non_empty(default: Any = dataclasses.MISSING) -> Any:
    return _rule("a non-empty string", lambda v: bool(v.strip()), default)


@dataclass(frozen=True, kw_only=True)
class Fact:
    """One published or derived number (or description) together with where it comes from."""

    value: Union[float, int, str, None]
    source: str = _non_empty()
    confidence: str = _one_of(CONFIDENCES)


def _fact(kind: str, optional: bool = False) -> Any:
    # "kind" is what Fact.value must hold for this key; checked after parsing (see _check_facts).
    return field(default=None if optional else dataclasses.MISSING, metadata={"value_kind": kind})


@dataclass(frozen=True, kw_only=True)
class Hardware:
    cpu: Fact = _fact("text")
    gpu: Fact | None = _fact("text", optional=True)
    fp32_gflops: Fact = _fact("number")
    fp16_gflops: Fact = _fact("number")
    int8_tops: Fact = _fact("number")
    memory_bandwidth_gbps: Fact = _fact("number")
    memory_capacity_mb: Fact = _fact("number")
    dla_cores: Fact = _fact("integer")


@dataclass(frozen=True, kw_only=True)
class Runtime:
    engine: str = _one_of(ENGINES)
    version: str = _non_empty()
    precision: str = _one_of(PRECISIONS)
    opset: int = _at_least(7)
    max_opset: int = _at_least(7)
    execution_providers: tuple[str, ...]
    require_provider: bool
    trtexec_path: str | None = None
    workspace_mb: int | None = _at_least(1, default=None)


@dataclass(frozen=True, kw_only=True)
class Pruning:
    channel_multiple: int = _at_least(1)
    min_channels: int = _at_least(1)


@dataclass(frozen=True, kw_only=True)
class Budget:
    latency_ms: float | None = _rule("a number > 0", lambda v: v > 0, default=None)
    memory_mb: float | None = _rule("a number > 0", lambda v: v > 0, default=None)


@dataclass(frozen=True, kw_only=True)
class SshTarget:
    host: str = _non_empty()
    user: str = _non_empty()
    port: int = _rule("an integer in 1..65535", lambda v: 1 <= v <= 65535)
    key_file: str | None = None
    workdir: str = _non_empty()
    python: str = _non_empty(default="python3")


@dataclass(frozen=True, kw_only=True)
class Measurement:
    method: str = _one_of(METHODS)
    batch_size: int = _at_least(1)
    warmup_runs: int = _at_least(0)
    timed_runs: int = _at_least(1)
    threads: int | None = _at_least(1, default=None)
    ssh: SshTarget | None = None


LAYER_KINDS = ("conv_kxk", "conv_1x1", "depthwise", "linear")
COST_FACTORS = ("compute_efficiency", "memory_efficiency", "layer_overhead_ms", "network_overhead_ms",
                "channel_alignment") + tuple(f"kind_efficiency.{k}" for k in LAYER_KINDS)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _fraction_or_null() -> Any:
    return _rule("a number in (0, 1]", lambda v: 0 < v <= 1, default=None)


@dataclass(frozen=True, kw_only=True)
class KindEfficiency:
    """Compute efficiency per layer kind; a kind left out uses cost_model.compute_efficiency."""

    conv_kxk: float | None = _fraction_or_null()
    conv_1x1: float | None = _fraction_or_null()
    depthwise: float | None = _fraction_or_null()
    linear: float | None = _fraction_or_null()


@dataclass(frozen=True, kw_only=True)
class OutOfSample:
    """One network with a published latency that the fit did not see, and how far the fit misses it."""

    network: str = _non_empty()
    published_ms: float = _rule("a number > 0", lambda v: v > 0)
    predicted_ms: float = _at_least(0, kind="a number")
    error_pct: float


@dataclass(frozen=True, kw_only=True)
class FitMachine:
    """The CPU a measured fit ran on: factors fitted on one CPU do not describe another."""

    cpu: str = _non_empty()
    isa: str = _non_empty()
    cores: int = _at_least(1)


@dataclass(frozen=True, kw_only=True)
class CostFit:
    """Provenance of fitted factors: a fit without its data and error is not to be trusted."""

    data: str = _non_empty()
    # Quoted in YAML: an unquoted date would load as a date object, not the text that was written.
    date: str = _rule("a quoted date \"YYYY-MM-DD\"", lambda v: bool(_DATE.fullmatch(v)))
    command: str | None = None
    samples: int = _at_least(1)
    free_factors: tuple[str, ...] = _rule("a list of factor names out of " + ", ".join(COST_FACTORS),
                                          lambda v: bool(v) and all(f in COST_FACTORS for f in v))
    median_abs_error_pct: float = _at_least(0, kind="a number")
    max_abs_error_pct: float = _at_least(0, kind="a number")
    share_within_10pct: float = _rule("a number in [0, 1]", lambda v: 0 <= v <= 1)
    # Networks kept out of the fit: their errors are the out-of-sample check of the fitted factors.
    out_of_sample: tuple[OutOfSample, ...] = ()
    # Measured fits: the machine they were measured on (compared with this one before the factors are used).
    machine: FitMachine | None = None


@dataclass(frozen=True, kw_only=True)
class CostModel:
    compute_efficiency: float = _fraction()
    memory_efficiency: float = _fraction()
    layer_overhead_ms: float = _at_least(0, kind="a number")
    # Paid once per inference (session call, input/output copies), whatever the layers.
    network_overhead_ms: float = _at_least(0, kind="a number", default=0.0)
    kind_efficiency: KindEfficiency | None = None
    # Kernels that compute in channel blocks pad the channels up to the block (ONNX Runtime's NCHWc).
    channel_alignment: int = _at_least(1, default=1)
    # The rates the efficiencies are fractions of, where the hardware section has none that fits
    # (e.g. one thread of a multi-core CPU); null: the hardware peak at the runtime precision.
    reference_gflops: Fact | None = _fact("number", optional=True)
    reference_gbps: Fact | None = _fact("number", optional=True)
    fitted: bool
    source: str = _non_empty()
    fit: CostFit | None = None


@dataclass(frozen=True, kw_only=True)
class DeviceProfile:
    schema_version: int = _rule(f"{SCHEMA_VERSION} (the only schema version so far)",
                                lambda v: v == SCHEMA_VERSION)
    name: str = _rule("a non-empty name without spaces",
                      lambda v: bool(v) and not any(c.isspace() for c in v))
    description: str = _non_empty()
    extends: str | None = None
    notes: tuple[str, ...] = ()
    hardware: Hardware
    runtime: Runtime
    pruning: Pruning
    budget: Budget
    measurement: Measurement
    cost_model: CostModel
    # Where it was loaded from; not a YAML key and not part of equality.
    source_file: str = field(default="", compare=False, metadata={"yaml": False})

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON- and YAML-safe dict with every key, in schema order (source_file left out)."""
        return _to_plain(self)


def yaml_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("yaml", True)]


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in yaml_fields(type(obj))}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


# ---- the generic parser -------------------------------------------------------------------------

_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               type(None): "null"}


def _describe(hint: Any) -> str:
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return f"a list of {_describe(typing.get_args(hint)[0])[2:]}s"  # "a string" -> "strings"
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        words = [_describe(a) for a in args if not (a is int and float in args)]  # ints are numbers
        return ", ".join(words[:-1]) + " or " + words[-1]
    return _TYPE_WORDS.get(hint, getattr(hint, "__name__", str(hint)))


def _scalar(value: Any, hint: type) -> tuple[bool, Any]:
    # YAML's `true` must not pass as 1, and `10` may stand for 10.0, never the other way round.
    if isinstance(value, bool):
        return hint is bool, value
    if hint is int:
        return isinstance(value, int), value
    if hint is float:
        # .inf and .nan are YAML floats, but no budget or factor can be infinite: `latency_ms: .inf` would be
        # "met" by anything and written to report.json as Infinity, which JSON does not have.
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        return ok, float(value) if ok else value
    return isinstance(value, hint), value


def _convert(value: Any, hint: Any, key: str, where: str) -> Any:
    """Return `value` converted to `hint`, or raise ProfileError naming the dotted `key`."""
    if dataclasses.is_dataclass(hint):
        return parse_dataclass(hint, value, where, prefix=key + ".")
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        # float last, so that an int stays an int in `float | int | str`.
        arms = sorted((a for a in args if a is not type(None)), key=lambda a: a is float)
        errors = []
        for arm in arms:
            try:
                return _convert(value, arm, key, where)
            except ProfileError as exc:
                errors.append(exc)
        if len(arms) == 1 and dataclasses.is_dataclass(arms[0]) and isinstance(value, dict):
            raise errors[0]  # the nested mapping's own error names the inner key
        raise _type_error(key, _describe(hint), value, where)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise _type_error(key, _describe(hint), value, where)
        (item,) = typing.get_args(hint)[:1]
        return tuple(_convert(v, item, f"{key}[{i}]", where) for i, v in enumerate(value))
    ok, converted = _scalar(value, hint)
    if not ok:
        raise _type_error(key, _describe(hint), value, where)
    return converted


def _type_error(key: str, expect: str, value: Any, where: str) -> ProfileError:
    hint = ""
    if "string" in expect and isinstance(value, (int, float)) and not isinstance(value, bool):
        hint = f' (quote it: "{excerpt(value)}")'
    return ProfileError(f"profile {where}: key '{key}' must be {expect}, got {excerpt(value)}{hint}")


def parse_dataclass(cls: type, data: Any, where: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, strictly: unknown keys and missing required keys are
    errors, types follow the field hints, and field metadata rules are applied.

    `where` names the file in messages; `prefix` is the dotted path of `data` inside it.
    """
    label = prefix.rstrip(".")
    if not isinstance(data, dict):
        what = f"key '{label}'" if label else "the top level"
        raise ProfileError(f"profile {where}: {what} must be a mapping, got {excerpt(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in yaml_fields(cls)}
    allowed = ", ".join(fields)
    for key in data:
        if key not in fields:
            name = str(key) if isinstance(key, str) else excerpt(key)
            close = difflib.get_close_matches(name[:100], fields, n=1)
            guess = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            shown = name if len(name) <= 80 else name[:77] + "..."
            raise ProfileError(
                f"profile {where}: unknown key '{prefix}{shown}'{guess} (allowed: {allowed})")
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProfileError(f"profile {where}: missing required key '{key}'")
            continue
        value = data[name]
        ok = f.metadata.get("ok")
        if ok is not None and value is not None:
            # Wording the type error with the rule gives "an integer >= 1, got 'eight'".
            try:
                value = _convert(value, hints[name], key, where)
            except ProfileError:
                optional = " or null" if type(None) in typing.get_args(hints[name]) else ""
                raise _type_error(key, f.metadata["expect"] + optional, value, where) from None
            if not ok(value):
                raise _type_error(key, f.metadata["expect"], value, where)
        else:
            value = _convert(value, hints[name], key, where)
        kwargs[name] = value
    return cls(**kwargs)


# ---- rules that involve more than one key ---------------------------------------------------------

def parse_profile(data: Any, where: str, source_file: str) -> DeviceProfile:
    profile = parse_dataclass(DeviceProfile, data, where)
    _check_facts(profile.hardware, where)
    _check_facts(profile.cost_model, where, "cost_model")
    _check_cost_fit(profile.cost_model, where)
    _check_consistency(profile, where)
    return dataclasses.replace(profile, source_file=source_file)


def _check_facts(section: Any, where: str, prefix: str = "hardware") -> None:
    for f in dataclasses.fields(section):
        if "value_kind" not in f.metadata:
            continue
        fact = getattr(section, f.name)
        if fact is None or fact.value is None:
            continue  # null value = unknown or not supported; the source says which
        value, kind = fact.value, f.metadata["value_kind"]
        if kind == "text":
            ok, expect = isinstance(value, str), "a string"
        elif kind == "integer":
            ok, expect = isinstance(value, int) and value >= 0, "an integer >= 0 or null"
        else:
            ok, expect = isinstance(value, (int, float)) and value >= 0, "a number >= 0 or null"
        if not ok:
            raise _type_error(f"{prefix}.{f.name}.value", expect, value, where)


def _check_cost_fit(cm: CostModel, where: str) -> None:
    if cm.fitted and cm.fit is None:
        raise ProfileError(f"profile {where}: missing key 'cost_model.fit', required when cost_model.fitted is "
                           "true (give the data, date, samples, free_factors and the fit's errors)")
    if not cm.fitted and cm.fit is not None:
        raise ProfileError(f"profile {where}: key 'cost_model.fit' is given but cost_model.fitted is false; "
                           "set fitted: true or remove the fit block")


def _check_consistency(p: DeviceProfile, where: str) -> None:
    rt, m = p.runtime, p.measurement
    if rt.opset > rt.max_opset:
        raise ProfileError(
            f"profile {where}: key 'runtime.opset' is {rt.opset} but runtime.max_opset is "
            f"{rt.max_opset}; export at an opset the runtime's parser supports (<= {rt.max_opset})")
    if m.method == "ssh" and m.ssh is None:
        raise ProfileError(
            f"profile {where}: missing key 'measurement.ssh', required when measurement.method "
            "is 'ssh' (give host, user, port, workdir; or use method 'none')")
    if rt.require_provider and rt.engine == "onnxruntime" and not rt.execution_providers:
        raise ProfileError(
            f"profile {where}: key 'runtime.require_provider' is true but "
            "runtime.execution_providers is empty; name the provider to require")
