"""Typed configs of a run, one per pass, composed into CompressConfig (and ValidateConfig for `compress validate`).

Strict: an unknown key, or a value out of range, is an InputError naming it and its command-line flag (exit 2).
Each field carries what the command line needs (flag, metavar, group, how to parse its text): `compress --help`
and the Python API's keywords are generated from these classes (cli/options.py, `CompressConfig.from_keywords`),
so the three cannot drift apart. A field's keyword is its flag without dashes (`--train-batch-size` ->
`train_batch_size`); units are in the names. This module imports neither torch nor the passes: the command
line reads it before anything heavy loads.
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Iterator, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from .errors import InputError

MODES = ("auto", "finetune", "distill")
TRAIN_DEVICES = ("auto", "cpu", "cuda")


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def checked(ok: Callable[[Any], bool], rule: str):
    """A check on the value as given (no coercion first: "1" is not an epoch count); `rule` is the error's text."""
    def check(v):
        if not ok(v):
            raise ValueError(rule)
        return v
    return BeforeValidator(check)


def option(default: Any = None, help: str = "", *, flag: str | None = None, short: str | None = None,
           metavar: str | None = None,
           group: str | None = None, parse: str | None = None, choices: tuple | None = None, cli: bool = True,
           api: bool = True, show_default: bool = True, positional: bool | str = False, alias: str | None = None, rule: str | None = None) -> Any:
    """A config field with its command-line form; `parse` names a text parser of cli/options.py. `cli=False`:
    a Python API keyword only; `api=False`: set by the run, not by a keyword (the recovery's seed is the run's)."""
    extra = {k: v for k, v in dict(flag=flag, short=short, metavar=metavar, group=group, parse=parse, choices=choices, cli=cli,
                                   api=api, show_default=show_default, positional=positional, rule=rule).items() if v is not None}
    return Field(default, description=help, alias=alias, json_schema_extra=extra)


class Config(BaseModel):
    """Strict and frozen; errors are one line naming the flag (`group` titles its --help section)."""
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, arbitrary_types_allowed=True)
    group: ClassVar[str] = ""
    error: ClassVar[type[Exception]] = InputError
    error_prefix: ClassVar[str] = ""

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise self._one_line(e.errors()[0]) from None

    @classmethod
    def _one_line(cls, err: dict) -> Exception:
        key = str(err["loc"][0]) if err["loc"] else "?"
        if err["type"] == "extra_forbidden":
            known = ", ".join(sorted(keyword(cls, n) for n in cls.model_fields))
            return cls.error(f"unknown {cls.error_prefix or 'option '}{key!r}; known: {known}")
        name = next((n for n, f in cls.model_fields.items() if key in (n, f.alias)), key)
        flag, value = flag_of(cls, name), err.get("input")
        extra = extra_of(cls.model_fields[name]) if name in cls.model_fields else {}
        if err["type"] == "literal_error":
            return cls.error(f"unknown {flag} {value!r}; choose one of {err['ctx']['expected']}")
        rule = extra.get("rule") or err["msg"]
        what = f"{cls.error_prefix}{name} ({flag})" if cls.error_prefix else flag
        return cls.error(f"{what} must be {rule}, got {value!r}")

    def to_dict(self) -> dict:
        return self.model_dump()


def extra_of(info: FieldInfo) -> dict:
    return info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}


def keyword(cls: type[Config], name: str) -> str:
    """The Python API keyword of a field: its flag without the dashes."""
    return flag_of(cls, name).lstrip("-").replace("-", "_")


def flag_of(cls: type[Config], name: str) -> str:
    info = cls.model_fields[name]
    return extra_of(info).get("flag") or "--" + (info.alias or name).replace("_", "-")


def leaves(cls: type[Config], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str, FieldInfo, str]]:
    """(path, keyword, field, group) of every option of `cls`, nested configs flattened, in declaration order."""
    for name, info in cls.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, Config):
            yield from leaves(sub, (*path, name))
        elif extra_of(info).get("api", True):
            yield (*path, name), keyword(cls, name), info, extra_of(info).get("group") or cls.group


# ---- one config per pass -------------------------------------------------------------------------------

class LoadConfig(Config):
    group: ClassVar[str] = "model"
    model: Any = option(None, "model file: a state dict / checkpoint (with --arch), a pruned model written by "
                        "compress, TorchScript (measure/export only) or a pickled module (with --trust-model)",
                        positional="optional")
    arch: str | None = option(None, "architecture for a state dict: a built-in name (see --list-archs) or "
                              "package.module:callable")
    arch_kwargs: dict = option({}, "keyword arguments for --arch, as JSON", metavar="JSON", parse="json")
    trust_model: bool = option(False, "allow loading a pickled full module (unpickling runs code from the file)")
    input_shape: tuple[int, ...] | None = option(None, "input shape, e.g. 1x3x224x224 (default: from the built-in "
                                                 "architecture, else from --calib; batch from the profile)",
                                                 metavar="NxCxHxW", parse="shape")
    example_input: Any = option(None, "with a model object: a tensor whose shape is the input's", cli=False)


class CalibrationConfig(Config):
    group: ClassVar[str] = "calibration data"
    calib: str | None = option(None, "image folder (one sub-folder per class), .npz/.npy (x, optional y) or "
                               "module:callable", metavar="PATH|module:callable")
    calib_samples: int = option(256, "samples to use", metavar="N")
    mean: tuple[float, ...] | None = option(None, "per-channel mean for image folders (default: the "
                                            "architecture's)", metavar="M,M,M", parse="floats")
    std: tuple[float, ...] | None = option(None, "per-channel std for image folders (default: the architecture's)",
                                           metavar="S,S,S", parse="floats")


class BudgetConfig(Config):
    group: ClassVar[str] = "budget (default: the target profile's)"
    latency_ms: str | float | None = option(None, "latency at the profile's batch size, ms (or 50% of the "
                                            "original)", metavar="MS")
    speedup: float | None = option(None, "latency budget as original latency / X", metavar="X")
    memory_mb: str | float | None = option(None, "predicted memory: weights + the largest layer's input and output "
                                           "activations, MB (or a fraction like 50%)", metavar="MB")
    macs: str | float | None = option(None, "multiply-accumulates, e.g. 40M, or 50% of the original", metavar="N")
    params: str | float | None = option(None, "parameters, e.g. 0.4M, or 0.5x of the original", metavar="N")
    max_accuracy_drop: Annotated[float | None, checked(lambda v: v is None or (_real(v) and 0 <= v <= 100), "")] = option(
        None, "accuracy limit: the pruned model may lose at most this many percentage points of top-1 (classifiers) "
        "or mean IoU (per-pixel classes) on a held-out quarter of --calib, against its labels, or, without labels, "
        "against the original's predictions; the search stops before a round that breaks it", metavar="POINTS",
        rule="a number of percentage points from 0 to 100, e.g. 2")
    min_agreement: Annotated[str | float | None, BeforeValidator(lambda v: percent(v, "--min-agreement"))] = option(
        None, "accuracy limit: the pruned model must agree with the original on at least this percent of the "
        "held-out quarter of --calib (same top-1 class; for per-pixel classes, the mean IoU of the class maps)",
        metavar="PERCENT")

    @model_validator(mode="after")
    def _one_accuracy_limit(self):
        if self.max_accuracy_drop is not None and self.min_agreement is not None:
            raise InputError("give --max-accuracy-drop or --min-agreement, not both (one accuracy limit per run)")
        return self

    @property
    def accuracy_limit(self) -> tuple[str, float] | None:
        """(flag, value) of the accuracy limit, or None."""
        if self.max_accuracy_drop is not None:
            return "--max-accuracy-drop", float(self.max_accuracy_drop)
        if self.min_agreement is not None:
            return "--min-agreement", float(self.min_agreement)
        return None


def percent(value, flag: str) -> float | None:
    """A percent from 1 to 100 ("95", "95%", 95); a fraction such as 0.95 is refused so that it is not read as
    0.95 %."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        number = float(text.removesuffix("%")) if isinstance(value, str) else value
    except ValueError:
        raise InputError(f"{flag} must be a percent such as 95, got {value!r}") from None
    if not _real(number) or not 0 <= number <= 100:
        raise InputError(f"{flag} must be a percent from 0 to 100, e.g. 95, got {value!r}")
    if number <= 1 and not text.endswith("%"):
        raise InputError(f"{flag} is a percent: {value!r} looks like a fraction; write {number * 100:g} for "
                         f"{number * 100:g} %")
    return float(number)


class PruneConfig(Config):
    group: ClassVar[str] = "pruning"
    criterion: str = option("auto", "channel importance criterion; see --list-criteria. auto, with --calib: "
                            "consumer-mi (most accurate one-shot), or capacity-independence weighted by L1 when "
                            "--train-data follows (most accurate after training); l1 without --calib (BENCHMARKS.md)")
    criterion_options: dict = option({}, "an option of the criterion, repeatable (e.g. alpha=1.01, cutoff=scree); "
                                     "see --list-criteria for each criterion's options (the criterion registry "
                                     "refuses unknown keys)", flag="--criterion-option", metavar="KEY=VALUE",
                                     parse="key_values")
    selection: Literal["knapsack", "uniform"] = option(
        "knapsack", "knapsack: remove the least important channels per unit of the binding resource, priced by the "
        "target's cost model and corrected by each measurement; uniform: the same share of every layer per round")
    step: Annotated[float, checked(lambda v: _real(v) and 0 < v < 1, "")] = option(
        0.05, "uniform selection: fraction of the original channels removed per round", metavar="X",
        rule="between 0 and 1 (a fraction of the channels per round)")


class RecoveryOptionsError(InputError, ValueError):
    """A recovery option out of range (a ValueError too, for callers of the Python API)."""


class RecoveryOptions(Config):
    """How the pruned model is trained back (compress/recovery.py explains each default); these checks replace
    the rules table recovery.py had."""
    group: ClassVar[str] = "recovery after pruning (fine-tuning with labels, distillation from the original without)"
    error: ClassVar[type[Exception]] = RecoveryOptionsError
    error_prefix: ClassVar[str] = "recovery option "

    epochs: Annotated[float, checked(lambda v: _real(v) and v > 0, "a number > 0 (0.5 is half an epoch)")] = option(
        1.0, "epochs (fractions allowed)", metavar="N", rule="a number > 0 (0.5 is half an epoch)")
    lr: Annotated[float, checked(lambda v: _real(v) and v > 0, "a number > 0")] = option(
        0.01, "learning rate (SGD with cosine decay)", metavar="X", rule="a number > 0")
    batch_size: Annotated[int, checked(lambda v: _integer(v) and v >= 2, "")] = option(
        64, "batch size per process", metavar="N", alias="train_batch_size",
        rule="an integer >= 2 (BatchNorm in train mode needs two samples per batch)")
    weight_decay: Annotated[float, checked(lambda v: _real(v) and v >= 0, "")] = option(
        1e-4, "weight decay", metavar="X", rule="a number >= 0")
    momentum: Annotated[float, checked(lambda v: _real(v) and 0 <= v < 1, "")] = option(
        0.9, "SGD momentum", metavar="X", rule="a number in [0, 1)")
    temperature: Annotated[float, checked(lambda v: _real(v) and v > 0, "")] = option(
        4.0, "distillation temperature", metavar="T", alias="kd_temperature", rule="a number > 0")
    alpha: Annotated[float, checked(lambda v: _real(v) and 0 <= v <= 1, "")] = option(
        0.0, "with labels: weight of distillation against cross-entropy", metavar="X", alias="kd_alpha",
        rule="a number in [0, 1] (the share of the distillation term when labels are used)")
    mode: Annotated[str, checked(lambda v: isinstance(v, str) and v in MODES, "")] = option(
        "auto", "auto: fine-tune when the data has labels, distil from the original otherwise",
        alias="recovery_mode", choices=MODES, rule="one of " + ", ".join(MODES))
    device: Annotated[str, checked(lambda v: isinstance(v, str) and v in TRAIN_DEVICES, "")] = option(
        "auto", "auto: a GPU when present", alias="train_device", choices=TRAIN_DEVICES,
        rule="one of " + ", ".join(TRAIN_DEVICES))
    seed: Annotated[int, checked(lambda v: _integer(v) and v >= 0, "")] = option(
        0, "the run's --seed", flag="--seed", cli=False, api=False, rule="an integer >= 0")
    num_workers: Annotated[int, checked(lambda v: _integer(v) and v >= 0, "")] = option(
        0, "data loader workers", metavar="N", alias="train_workers", rule="an integer >= 0")
    max_steps: Annotated[int | None, checked(lambda v: v is None or (_integer(v) and v >= 1), "")] = option(
        None, "stop after this many steps", metavar="N", rule="an integer >= 1, or None for no cap")


class RecoverConfig(Config):
    group: ClassVar[str] = RecoveryOptions.group
    train_data: str | None = option(None, "training data, same formats as --calib; enables recovery", metavar="PATH")
    train_samples: int | None = option(None, "samples of --train-data to use (default all)", metavar="N")
    options: RecoveryOptions = RecoveryOptions()


class ExportConfig(Config):
    group: ClassVar[str] = "export"
    dynamic_batch: bool = option(False, "export the ONNX model with a dynamic batch dimension (exported at batch 2 "
                                 "so no size 1 is baked in; TensorRT builds it for the profile's batch size)")


class MeasureConfig(Config):
    group: ClassVar[str] = "measuring latency (on this machine, or on a device over SSH)"
    timing_precision: Annotated[float | None, checked(lambda v: v is None or (_real(v) and 0 < v <= 50),
                                                      "a percentage in (0, 50]")] = option(
        None, "time each model until its median (or its ratio to the original) is known within this many percent "
        "at 95 % confidence (default: the profile's measurement.precision_pct, 1 on host)", metavar="PCT",
        rule="a percentage in (0, 50]")
    device: str | None = option(None, "measure latency on this device over SSH (host-key checking on; the key must "
                                "be in known_hosts) instead of the profile's own method", metavar="USER@HOST[:PORT]")
    ssh_key: str | None = option(None, "private key for --device", metavar="FILE")
    known_hosts: str | None = option(None, "known_hosts file to trust for --device (default: ssh's)", metavar="FILE")
    device_python: str | None = option(None, "Python on the device with onnxruntime and numpy (default python3)",
                                       metavar="PATH")
    no_cost_fit: bool = option(False, "on a host whose CPU is not the one its cost model was fitted on, do not fit "
                               "it here before pruning to a latency budget (about 20 s, cached per machine); "
                               "re-measure its reference rates only")


class OutputConfig(Config):
    group: ClassVar[str] = "output"
    out: str | Path | None = option(None, "output folder (default ./compressed/<model>-<target>)", metavar="DIR")
    progress: bool = option(True, "progress bars on a terminal", cli=False)


# ---- the run ---------------------------------------------------------------------------------------------

class RunConfig(Config):
    """Shared by CompressConfig and ValidateConfig: building from flat keywords (the Python API, the CLI)."""

    @classmethod
    def from_keywords(cls, **keywords):
        """The config from flat keywords (`latency_ms=2, train_batch_size=32`); an unknown one is an InputError."""
        paths = {kw: path for path, kw, _, _ in leaves(cls)}
        unknown = [k for k in keywords if k not in paths]
        if unknown:
            raise InputError(f"unknown option {unknown[0]!r}; known: {', '.join(sorted(paths))}")
        nested: dict = {}
        for kw, value in keywords.items():
            *parents, name = paths[kw]
            node = nested
            for p in parents:
                node = node.setdefault(p, {})
            node[name] = value
        return _build(cls, nested)

    def to_dict(self) -> dict:
        """Every option by its keyword, defaults included (the report's inputs.options): the model object and the
        example tensor are described, not copied."""
        out = {}
        for path, kw, _, _ in leaves(type(self)):
            value = self
            for p in path:
                value = getattr(value, p)
            out[kw] = _describe(kw, value)
        return out


class CompressConfig(RunConfig):
    target: str = option("host", "device profile: a built-in name (see --list-targets) or your own YAML file",
                         metavar="NAME|FILE.yaml", group="target", show_default=False)
    seed: int = option(0, "random seed", metavar="N", group="pruning")
    load: LoadConfig = LoadConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    budget: BudgetConfig = BudgetConfig()
    prune: PruneConfig = PruneConfig()
    recover: RecoverConfig = RecoverConfig()
    measure: MeasureConfig = MeasureConfig()
    export: ExportConfig = ExportConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _accuracy_limit_needs_data(self):
        limit = self.budget.accuracy_limit
        if limit is not None and self.calibration.calib is None:
            raise InputError(f"{limit[0]} is measured on calibration data; pass --calib (images or .npz/.npy, "
                             "labels optional)")
        return self

    def recovery_options(self) -> RecoveryOptions:
        """The recovery options with the run's seed (checked before the model loads)."""
        return RecoveryOptions(**{**self.recover.options.model_dump(), "seed": self.seed})


class ValidateBudgetConfig(Config):
    group: ClassVar[str] = "budget (optional: without one, the model is measured and reported)"
    latency_ms: str | float | None = option(None, "latency budget, ms (absolute)", metavar="MS")
    memory_mb: str | float | None = option(None, "memory budget, MB (absolute): weights + the largest layer's input "
                                           "and output activations, as in compress", metavar="MB")
    params: str | float | None = option(None, "parameter budget, e.g. 0.4M", metavar="N")


class ValidateConfig(RunConfig):
    """`compress validate`: any ONNX model measured on a target, no pruning."""
    group: ClassVar[str] = "model"
    model: Any = option(None, "ONNX model", positional=True)
    target: str = option("host", "built-in name or profile YAML; must be measurable (host, or --device)",
                         metavar="NAME|FILE.yaml", show_default=False)
    input_shape: tuple[int, ...] | None = option(None, "for models with dynamic input dimensions", metavar="NxCxHxW",
                                                 parse="shape")
    budget: ValidateBudgetConfig = ValidateBudgetConfig()
    measure: MeasureConfig = MeasureConfig()
    out: str | Path | None = option(None, "output folder (default ./validated/<model>-<target>)", metavar="DIR",
                                    group="output")
    seed: int = option(0, "seed of the random input", cli=False)


def _build(cls: type[Config], data: dict) -> Config:
    for name, info in cls.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, Config) and name in data:
            data[name] = _build(sub, data[name])
    return cls(**data)


def _describe(kw: str, value):
    if kw == "model" and not isinstance(value, (str, Path, type(None))):
        return f"<{type(value).__name__} object>"
    if kw == "example_input" and value is not None:
        shape = getattr(value, "shape", None)
        return {"shape": [int(v) for v in shape]} if shape is not None else type(value).__name__
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value
