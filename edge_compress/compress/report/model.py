"""report.json as typed values: one pydantic model per section, so each stage contributes its section as a value
the type checks, and the JSON Schema (schema.py) is generated from these types instead of kept by hand.

Sections are closed (`extra="forbid"`) unless their layout belongs to another component or varies by host,
criterion or search (latency statistics of a runner, engine and export details, a criterion's details, round
extras, the device profile, options, environment): those are `Open` and accept extra keys, as schema 1.x did.
Every number is finite: JSON has no NaN or Infinity, and a NaN in a report is our bug.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

REPORT_SCHEMA_VERSION = "1.3"

SHA256 = r"^[0-9a-f]{64}$"
KIND = r"^(measured|predicted)"


def _number(ge: float | None = None, le: float | None = None):
    """A finite JSON number, kept as written: an int stays an int (a float field would turn 1000 into 1000.0)."""
    bounds = {k: v for k, v in (("minimum", ge), ("maximum", le)) if v is not None}
    return Annotated[Union[int, float], Field(ge=ge, le=le, allow_inf_nan=False),
                     WithJsonSchema({"type": "number", **bounds})]


NonNegative = _number(ge=0)
Fraction = _number(ge=0, le=1)
Cosine = _number(ge=-1, le=1)
Sha256 = Annotated[str, Field(pattern=SHA256, description="Lower-case hex SHA-256 of the file's bytes.")]
LatencyKind = Annotated[str, Field(pattern=KIND, description="'measured: where, how, runs' or 'predicted: by what'.")]
Count = Annotated[int, Field(ge=0)]
Precision = Literal["fp32", "fp16", "int8"]
Selection = Literal["knapsack", "uniform"]


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Open(BaseModel):
    """A section whose extra keys are another component's (a runner, a criterion, the host): kept as given."""
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class Budget(Closed):
    latency_ms: NonNegative | None = None
    memory_mb: NonNegative | None = None
    macs: NonNegative | None = None
    params: NonNegative | None = None


class TimingPrecision(Open):
    """How precisely a measured median is known (deploy.runners.adaptive.MedianPrecision)."""
    runs: Annotated[int, Field(ge=1)]
    confidence: Annotated[float, Field(gt=0.5, lt=1)]
    low_ms: NonNegative | None = Field(description="Lower end of the distribution-free (order-statistic) interval "
                                       "of the median at `confidence`; null when too few runs or not seen here.")
    high_ms: NonNegative | None
    half_width_pct: NonNegative | None = Field(description="The interval's larger distance from the median, % of "
                                               "the median: the precision reached.")
    target_pct: NonNegative | None = Field(description="The precision asked for; null for a fixed run count.")
    stopped_on: Literal["precision", "max_runs", "time_cap", "fixed"] = Field(description=(
        "Why timing stopped: the precision was reached, the run cap or the time cap hit, or a fixed run count "
        "(adaptive timing off, or a runner that cannot stop adaptively: see note)."))
    adaptive: bool
    decided_by: Literal["median", "ratio"] = Field(description=(
        "What the stop rule watched: this median, or the per-pair ratio to the model timed interleaved with it."))
    ratio: NonNegative | None = None
    ratio_low: NonNegative | None = None
    ratio_high: NonNegative | None = None
    ratio_half_width_pct: NonNegative | None = None
    note: str | None = None


class LatencyStats(Open):
    median_ms: NonNegative
    mean_ms: NonNegative | None = None
    std_ms: NonNegative | None = None
    min_ms: NonNegative | None = None
    max_ms: NonNegative | None = None
    p90_ms: NonNegative
    p95_ms: NonNegative
    p99_ms: NonNegative
    runs: Annotated[int, Field(ge=1)]
    warmup_runs: Count
    batch_size: Annotated[int, Field(ge=1)]
    throughput_ips: NonNegative | None = None
    runtime: str
    provider: str
    threads: Annotated[int, Field(ge=1)] | None = None
    where: str
    method: str
    precision: TimingPrecision | None = None


class Metrics(Open):
    """One model's metrics on the target (budget.Metrics.to_dict())."""
    latency_ms: NonNegative = Field(description="Latency of one batch in milliseconds (the median when measured).")
    latency_kind: LatencyKind
    memory_mb: NonNegative
    macs: Count | None
    params: Count


class OriginalMetrics(Metrics):
    latency_stats: LatencyStats | None


class FinalMetrics(OriginalMetrics):
    memory_kind: LatencyKind


class InputModel(Open):
    path: str
    sha256: Sha256
    kind: str
    arch: str | None
    arch_kwargs: dict[str, Any] | None = None


class Calibration(Open):
    source: str
    samples: Count
    labels_from: str | None


class BudgetRequested(Closed):
    """What the user asked for, as given ('60%', '2x', 1.5), or the profile's defaults when nothing was."""
    latency_ms: str | NonNegative | None = None
    speedup: str | NonNegative | None = None
    memory_mb: str | NonNegative | None = None
    macs: str | NonNegative | None = None
    params: str | NonNegative | None = None
    max_accuracy_drop: _number(ge=0, le=100) | None = None
    min_agreement: _number(ge=0, le=100) | None = None
    profile_defaults: dict[str, Any] | None = None


class TargetRuntime(Open):
    engine: str
    precision: Precision


class TargetMeasurement(Open):
    method: str


class Target(Open):
    """The device profile as resolved (device_profiles owns its layout beyond these keys)."""
    schema_version: int | None = None
    name: str
    extends: str | None = None
    hardware: dict[str, Any]
    runtime: TargetRuntime
    measurement: TargetMeasurement
    cost_model: dict[str, Any]


class Inputs(Open):
    model: InputModel
    target: Target
    input_shape: list[Annotated[int, Field(ge=1)]]
    budget_requested: BudgetRequested
    criterion: str | None
    seed: int
    step: Annotated[float, Field(gt=0, lt=1)] | None = None
    calibration: Calibration | None
    options: dict[str, Any]


class OutputAccuracy(Open):
    name: str
    rel_l2_error: NonNegative | None
    cosine_similarity: Cosine


Task = Literal["classification", "segmentation", "outputs"]


class NotEvaluated(Open):
    evaluated: Literal[False]
    why: str
    task: Task | None = None


class AccuracyGuard(Closed):
    """The accuracy limit (--max-accuracy-drop or --min-agreement) and the final model measured against it."""
    flag: Literal["--max-accuracy-drop", "--min-agreement"]
    limit: _number(ge=0, le=100)
    unit: Literal["points", "percent"] = Field(description=(
        "points: percentage points lost (at most `limit`); percent: agreement with the original (at least `limit`)."))
    value: _number(ge=-100, le=100) = Field(description="The final model's drop (points) or agreement (percent).")
    met: bool
    binding: bool = Field(description="Whether the limit stopped the search before the budget was reached.")
    measure: str
    samples: Annotated[int, Field(ge=1)]
    held_out: str


class Evaluated(Open):
    # The same rule as _has_its_comparison, for users' own JSON Schema tools.
    model_config = ConfigDict(json_schema_extra={
        "if": {"required": ["task"], "properties": {"task": {"const": "outputs"}}},
        "then": {"required": ["outputs"]}, "else": {"required": ["agreement_with_original"]}})

    evaluated: Literal[True]
    data: str
    samples: Annotated[int, Field(ge=1)]
    labels_from: str
    task: Task | None = None
    metric: str | None = None
    metric_description: str | None = None
    against: Literal["labels", "original"] | None = None
    higher_is_better: bool | None = None
    metric_original: NonNegative | None = None
    metric_final: NonNegative | None = None
    agreement_with_original: Fraction | None = None
    top1_original: Fraction | None = None
    top1_final: Fraction | None = None
    classes: Annotated[int, Field(ge=2)] | None = None
    miou_original: Fraction | None = None
    miou_final: Fraction | None = None
    miou_vs_original: Fraction | None = None
    pixel_accuracy_original: Fraction | None = None
    pixel_accuracy_final: Fraction | None = None
    agreement_description: str | None = None
    labels_used: bool | None = None
    worst_output: str | None = None
    cosine_similarity_min: Cosine | None = None
    outputs: Annotated[list[OutputAccuracy], Field(min_length=1)] | None = None
    guard: AccuracyGuard | None = Field(default=None, description=(
        "With an accuracy limit: the section is measured on the calibration samples held out for it, and this is "
        "the limit's verdict (a missed limit makes the run's verdict 'missed')."))

    @model_validator(mode="after")
    def _has_its_comparison(self):
        # Every task compares with something: per-output errors, or agreement with the original's predictions.
        key = "outputs" if self.task == "outputs" else "agreement_with_original"
        if key not in self.model_fields_set:
            raise ValueError(f"an evaluated {self.task or 'classification'} accuracy needs '{key}'")
        return self


class Group(Open):
    root: str
    original_channels: Count
    channels: Count
    members: list[str]
    prunable: bool
    reason: str


class RoundMetrics(Metrics):
    pass


class Round(Open):
    """One pruning round; the search adds what it priced and why (its own fields)."""
    selection: Selection
    channels_removed: Count
    metrics: RoundMetrics
    meets_budget: bool
    predicted_latency_ms: NonNegative | None = None
    measured_over_predicted: NonNegative | None = None


class Pruning(Open):
    criterion: str | None
    criterion_description: str | None = None
    criterion_options: dict[str, Any] | None = None
    criterion_details: dict[str, Any] | None = None
    selection: Selection | None = None
    rounds: list[Round]
    groups: list[Group]
    groups_after: list[Group] | None = None
    blocks_removed: list[str] | None = None
    bn_recalibrated_layers: Count | None = None
    recovery: dict[str, Any] | None = None


class LayerRow(Closed):
    """One conv/linear layer of the original; `_after` is null when the layer was removed."""
    name: str
    kind: str
    in_channels_before: Count
    in_channels_after: Count | None
    out_channels_before: Count
    out_channels_after: Count | None
    macs_before: Count
    macs_after: Count | None
    predicted_latency_share: Fraction | None = None


class OnnxExport(Open):
    path: str | None = None
    sha256: Sha256
    opset: Annotated[int, Field(ge=1)] | None
    exporter: str
    output_names: Annotated[list[str], Field(min_length=1)] | None = None
    output_shapes: list[list[int | str]] | None = None


class Simplify(Open):
    path: str
    sha256: Sha256
    simplified: bool
    reason: str | None = None


class OutputParity(Open):
    name: str
    shape: list[Count] | None = None
    max_abs: NonNegative | None
    max_rel: NonNegative | None
    scale: NonNegative | None = None
    passed: bool
    reason: str | None = None


class Parity(Open):
    max_abs: NonNegative
    max_rel: NonNegative
    atol: NonNegative
    rtol: NonNegative
    samples: Annotated[int, Field(ge=1)]
    passed: bool
    runtime: str | None = None
    reason: str | None = None
    outputs: Annotated[list[OutputParity], Field(min_length=1)] | None = None


class Quantization(Open):
    path: str
    sha256: Sha256
    max_abs_error: NonNegative
    top1_agreement: Fraction | None = None


class Export(Open):
    """`compress` exports, simplifies and checks parity; `compress validate` reports only the ONNX it was given."""
    onnx: OnnxExport
    simplify: Simplify | None = None
    parity: Parity | None = None
    quantization: Quantization | None = None


class Engine(Open):
    model_config = ConfigDict(json_schema_extra={
        "if": {"properties": {"built": {"const": False}}, "required": ["built"]},
        "then": {"required": ["why_not_built"]}})

    kind: str
    built: bool | None = None
    why_not_built: str | None = None
    precision: Precision | None = None
    sha256: Sha256 | None = None
    path: str | None = None
    measured_on: str | None = None

    @model_validator(mode="after")
    def _says_why_not_built(self):
        if self.built is False and self.why_not_built is None:
            raise ValueError("an engine not built here needs 'why_not_built'")
        return self


class Environment(Open):
    """Keys beyond these vary by host (CPU, cores, ONNX Runtime providers)."""
    versions: dict[str, str | None]
    python: str
    platform: str


Artifacts = Annotated[
    dict[str, Sha256], Field(min_length=1),
    WithJsonSchema({"type": "object", "minProperties": 1, "propertyNames": {"pattern": "^[^/].*$"},
                    "additionalProperties": {"type": "string", "pattern": SHA256},
                    "description": "Every file in the output folder: path relative to the folder -> SHA-256."})]


def _doc(text: str):
    return Field(description=text)


class Report(Closed):
    """The report `compress` writes next to the compressed model: what it was given, what it decided, what it
    measured or predicted, and the verdict a build gates on. Units are in key names (_ms milliseconds, _mb MiB,
    _s seconds). Top-level keys are closed: a new section needs a minor version bump (1.x adds optional fields
    only, so older 1.x reports still validate); removing or retyping a field makes 2.0."""
    # _compress_reports_are_complete, for users' own JSON Schema tools.
    model_config = ConfigDict(json_schema_extra={
        "if": {"properties": {"mode": {"const": "validate"}}, "required": ["mode"]},
        "then": {"properties": {"pruning": {"properties": {"rounds": {"maxItems": 0}}}}},
        "else": {"properties": {
            "inputs": {"properties": {"criterion": {"type": "string"}, "calibration": {"type": "object"}}},
            "pruning": {"properties": {"criterion": {"type": "string"}}},
            "export": {"required": ["onnx", "simplify", "parity"],
                       "properties": {"simplify": {"type": "object"}, "parity": {"type": "object"}}}}}})
    schema_version: str = Field(pattern=r"^1\.[0-9]+$", description=(
        "Report layout version (report.model.REPORT_SCHEMA_VERSION); any 1.x is accepted, since minor versions "
        "only add fields."))
    verdict: Literal["met", "missed", "no-budget"] = _doc(
        "Whether 'final' meets every limit in 'budget'. 'met' exits 0, 'missed' exits with the budget-missed code; "
        "'no-budget' (compress validate without a budget, 1.1+) is a latency report only and exits 0.")
    mode: Literal["compress", "validate"] | None = Field(default=None, description=
        "What wrote the report: the full pipeline (compress, the default when absent) or `compress validate` (a "
        "given ONNX model measured against a budget: nothing pruned, exported or compared with PyTorch).")
    inputs: Inputs = _doc(
        "Everything the run was given: model file and hash, architecture, target profile with its sources, the "
        "requested budget, criterion, seed, calibration data and all options.")
    budget: Budget = _doc(
        "The budget resolved to absolute limits (percentages and speedups applied to the original); only the "
        "constrained quantities appear. The verdict compares 'final' with these. Empty only with verdict "
        "'no-budget'.")
    original: OriginalMetrics = _doc(
        "The input model's metrics on the target, with its latency distribution when measured.")
    final: FinalMetrics = _doc(
        "The delivered model's metrics; when an engine was measured, its measurement is the latency that counts.")
    accuracy: NotEvaluated | Evaluated = _doc(
        "Accuracy before and after on the calibration data, when it was given, for the model's task: "
        "classification (top-1 against the labels, or agreement with the original), segmentation (mean IoU), or "
        "any other outputs (relative L2 error and cosine similarity per output against the original). Fractions "
        "in [0, 1].")
    pruning: Pruning = _doc(
        "How the channels were chosen. rounds and groups are empty when the original already met the budget; "
        "criterion_details and each round's extra fields depend on the criterion and the search.")
    layers: list[LayerRow] = _doc(
        "One row per conv/linear layer of the original: channels and MACs before and after, and its predicted "
        "share of the final latency when the profile's cost model is usable.")
    export: Export = _doc(
        "ONNX export, simplification, the parity check against PyTorch, and INT8 quantization when the profile "
        "asks for it. Paths are relative to the output folder.")
    engine: Engine = _doc(
        "The runtime engine: built here (ONNX Runtime, with path and sha256) or, for engines that must be built "
        "on the device (TensorRT), built: false with why_not_built and the build script.")
    timings_s: dict[str, NonNegative] = _doc(
        "Wall-clock seconds per pipeline stage (load, evaluate_original, score, prune, export, engine, measure, "
        "save, ...); stages that did not run are absent.")
    environment: Environment = _doc(
        "Where the run happened: package versions, Python, OS, CPU and the ONNX Runtime providers available.")
    artifacts: Artifacts = _doc("Every file in the output folder: path relative to the folder -> SHA-256.")
    notes: list[str] = _doc(
        "Plain-language remarks a reader should see (nothing pruned, INT8 accuracy change, skipped BatchNorm "
        "re-estimation, budget missed by ...).")

    @model_validator(mode="after")
    def _compress_reports_are_complete(self):
        # `compress validate` measures a given ONNX model: no criterion, calibration, simplification or parity.
        if self.mode == "validate":
            if self.pruning.rounds:
                raise ValueError("a validate report prunes nothing: 'pruning.rounds' must be empty")
            return self
        missing = [name for name, value in (("inputs.criterion", self.inputs.criterion),
                                            ("inputs.calibration", self.inputs.calibration),
                                            ("pruning.criterion", self.pruning.criterion),
                                            ("export.simplify", self.export.simplify),
                                            ("export.parity", self.export.parity)) if value is None]
        if missing:
            raise ValueError(f"a compress report needs {', '.join(missing)}")
        return self
