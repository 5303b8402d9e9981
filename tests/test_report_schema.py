"""report.json has a versioned JSON Schema in the repository, and every report the pipeline writes matches it."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

jsonschema = pytest.importorskip("jsonschema")

from edge_compress.compress.report.model import REPORT_SCHEMA_VERSION  # noqa: E402
from edge_compress.compress.report.schema import SCHEMA_PATH, ReportSchemaError, load_schema, schema_errors, validate_report  # noqa: E402

TINY = dict(arch="example-cnn", arch_kwargs={"width": 8}, progress=False)
INT8_PROFILE = "extends: host\nname: host-int8\nruntime:\n  precision: int8\n"

# One run per shape of report: measured on the host, predicted for a device, an INT8 engine, nothing pruned,
# and a data-driven criterion whose details (curves, cutoffs) land in the report.
RUNS = {
    "host": dict(target="host", macs="60%"),
    "jetson-nano": dict(target="jetson-nano", macs="70%"),
    "int8": dict(target="<int8 profile>", macs="60%"),
    "already-met": dict(target="host", latency_ms=1000),
    "cmi": dict(target="host", macs="60%", criterion="cmi"),
}


def test_schema_is_a_valid_draft_2020_12_schema():
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert REPORT_SCHEMA_VERSION in schema["title"] and REPORT_SCHEMA_VERSION in schema["$id"]


def test_every_top_level_key_is_documented():
    schema = load_schema()
    assert set(schema["required"]) == set(schema["properties"]) - {"mode"}   # mode: optional, "compress" if absent
    undocumented = [k for k, v in schema["properties"].items() if not v.get("description")]
    assert not undocumented


def test_checked_in_schema_is_generated_from_the_types():
    from edge_compress.compress.report.schema import schema_text

    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), \
        "schema.json is stale: run python -m edge_compress.compress.report.schema --write"


def test_typed_report_refuses_what_the_schema_refuses(reports):
    from pydantic import ValidationError

    from edge_compress.compress.report.model import Report

    written = reports["host"][0]
    assert Report.model_validate(written).model_dump(mode="json", exclude_unset=True) == written
    for case in ("verdict ok", "negative latency", "unknown section", "bad sha256"):
        with pytest.raises(ValidationError):
            Report.model_validate(_broken(written, BROKEN[case][0]))
    with pytest.raises(ValidationError):
        Report.model_validate(_broken(written, _set("final/latency_ms", float("nan"))))


def test_schema_file_is_package_data():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"].get("package-data", {})
    assert SCHEMA_PATH.name in package_data.get("edge_compress.compress.report", []), \
        "add \"edge_compress.compress.report\" = [\"schema.json\"] to [tool.setuptools.package-data], or installs lose the schema"


@pytest.fixture(scope="module")
def reports(tiny_model_file, calib_file, tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    """name -> (report.json as written, the report the Python API returned)."""
    from edge_compress.compress import compress

    root = tmp_path_factory.mktemp("reports")
    profile = root / "host-int8.yaml"
    profile.write_text(INT8_PROFILE)
    out = {}
    for name, kwargs in RUNS.items():
        kwargs = dict(kwargs)
        if kwargs["target"] == "<int8 profile>":
            kwargs["target"] = str(profile)
        result = compress(tiny_model_file, calib=str(calib_file), out=root / name, **TINY, **kwargs)
        out[name] = (json.loads((result.out_dir / "report.json").read_text()), result.report)
    return out


@pytest.mark.parametrize("name", list(RUNS))
def test_pipeline_reports_validate(reports, name):
    written, returned = reports[name]
    assert schema_errors(written) == []
    validate_report(written)
    assert schema_errors(returned) == []


def test_the_runs_cover_what_they_are_meant_to(reports):
    # Without these the parametrized runs above could silently stop exercising the interesting branches.
    host, nano = reports["host"][0], reports["jetson-nano"][0]
    assert host["final"]["latency_kind"].startswith("measured") and host["final"]["latency_stats"]
    assert nano["final"]["latency_kind"].startswith("predicted") and nano["final"]["latency_stats"] is None
    assert nano["engine"]["built"] is False
    assert reports["int8"][0]["engine"]["precision"] == "int8"
    assert "quantization" in reports["int8"][0]["export"]
    already = reports["already-met"][0]
    assert already["verdict"] == "met" and already["pruning"]["rounds"] == []
    assert "criterion_details" in reports["cmi"][0]["pruning"]


def _broken(report: dict, change) -> dict:
    report = copy.deepcopy(report)
    change(report)
    return report


def _set(path: str, value):
    def change(report):
        *parents, last = path.split("/")
        node = report
        for key in parents:
            node = node[key]
        node[last] = value
    return change


BROKEN = {
    "missing verdict": (lambda r: r.pop("verdict"), "$", "'verdict' is a required property"),
    "verdict ok": (_set("verdict", "ok"), "$.verdict", "'ok' is not one of"),
    "bad sha256": (_set("artifacts/model.onnx", "abc123"), '$.artifacts["model.onnx"]', "does not match"),
    "bad input sha256": (_set("inputs/model/sha256", "A" * 64), "$.inputs.model.sha256", "does not match"),
    "guessed latency": (_set("final/latency_kind", "guessed"), "$.final.latency_kind", "does not match"),
    "negative latency": (_set("final/latency_ms", -0.5), "$.final.latency_ms", "less than the minimum"),
    "negative p99": (_set("final/latency_stats/p99_ms", -1.0), "$.final.latency_stats.p99_ms",
                     "less than the minimum"),
    "latency as text": (_set("original/latency_ms", "0.1"), "$.original.latency_ms", "is not of type"),
    "notes not strings": (_set("notes", [1]), "$.notes[0]", "is not of type"),
    "unknown section": (_set("extra", {}), "$", "'extra' was unexpected"),
    "newer major": (_set("schema_version", "2.0"), "$.schema_version", "does not match"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_reports_name_the_path(reports, case):
    change, path, why = BROKEN[case]
    report = _broken(reports["host"][0], change)
    with pytest.raises(ReportSchemaError) as info:
        validate_report(report)
    message = str(info.value)
    assert "\n" not in message
    assert f"{path}: " in message and why in message, message
    assert any(e.startswith(f"{path}: ") for e in schema_errors(report))


def test_schema_error_is_a_value_error():
    assert issubclass(ReportSchemaError, ValueError)
