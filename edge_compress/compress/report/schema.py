"""The JSON Schema of report.json, generated from the typed report (model.py), and a validator for it.

The generated document is checked in as `schema.json` (package data) so that users validate their reports
with any JSON Schema tool; `python -m edge_compress.compress.report.schema --write` regenerates it, and a test
fails when the checked-in file is not what the types generate. Builds gate on report.json, so a report that
drifts from the documented layout must fail loudly in the test suite, not in someone's CI script.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from functools import lru_cache
from pathlib import Path

SCHEMA_PATH = Path(__file__).with_name("schema.json")


class ReportSchemaError(ValueError):
    """report.json does not match the schema; the message names the JSON path and the reason."""


@lru_cache(maxsize=1)
def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def generate_schema() -> dict:
    """The Draft 2020-12 schema of report.json, from report.model.Report."""
    from .model import REPORT_SCHEMA_VERSION, Report

    generated = Report.model_json_schema(mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://edge-compress.invalid/schemas/report-{REPORT_SCHEMA_VERSION}.json",
            **generated,
            "title": f"edge-compress report.json, schema version {REPORT_SCHEMA_VERSION}"}


def schema_text() -> str:
    return json.dumps(generate_schema(), indent=2, ensure_ascii=False) + "\n"


def _validator():
    # Imported lazily: `compress --help` should not pay for it.
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema())


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _path(error) -> str:
    out = "$"
    for part in error.absolute_path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:   # artifact keys are file names: "model.onnx" must not read as two levels
            out += f".{part}" if _PLAIN_KEY.match(part) else f"[{json.dumps(part)}]"
    return out


def _one_line(error) -> str:
    message = " ".join(str(error.message).split())
    if len(message) > 200:   # a failing `const`/`enum` quotes the whole offending value
        message = message[:197] + "..."
    return f"{_path(error)}: {message}"


def schema_errors(report: dict) -> list[str]:
    """Every violation as 'json.path: why', in document order; empty when the report is valid."""
    from jsonschema.exceptions import best_match

    errors = sorted(_validator().iter_errors(report), key=lambda e: [str(p) for p in e.absolute_path])
    # best_match on one error descends into oneOf/anyOf branches, so a bad value inside a nullable object
    # names the field rather than dumping the whole object.
    return [_one_line(best_match([e])) for e in errors]


def printable_report(obj):
    """The report with every string valid UTF-8 (a file name with a non-UTF-8 byte arrives as a lone surrogate,
    which neither report.json nor report.html can hold: it becomes U+FFFD), and refused if any number is NaN
    or infinite (JSON has neither; most parsers reject `Infinity`), which would be our bug."""
    if isinstance(obj, dict):
        return {printable_report(k): printable_report(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [printable_report(v) for v in obj]
    if isinstance(obj, str):
        return obj.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ReportSchemaError(f"report.json would hold {obj}, which JSON cannot represent")
    return obj


def validate_report(report: dict) -> None:
    """Raise ReportSchemaError naming the most relevant violation (jsonschema's best_match)."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator().iter_errors(report))
    if error is not None:
        raise ReportSchemaError(f"report.json does not match schema {load_schema()['$id']}: {_one_line(error)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_compress.compress.report.schema",
                                     description="Print (or --write) the report.json schema generated from the types.")
    parser.add_argument("--write", action="store_true", help=f"rewrite {SCHEMA_PATH.name} next to this module")
    args = parser.parse_args(argv)
    text = schema_text()
    if args.write:
        SCHEMA_PATH.write_text(text, encoding="utf-8")
        print(SCHEMA_PATH)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
