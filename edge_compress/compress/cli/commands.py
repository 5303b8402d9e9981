"""The command line's own commands: the listings (--list-targets, --list-archs, --list-criteria) and
`compress report DIR` (re-render report.html)."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError

MAX_REPORT_BYTES = 64 * 2**20


def list_criteria() -> int:
    from ..criteria.defaults import DATA_FREE_DEFAULT, ONE_SHOT_DEFAULT, WITH_RECOVERY_DEFAULT
    from ..criteria.registry import criterion_names, describe_criterion
    from ..info_criteria import criterion_option_defaults

    print(f"{'auto':22} the default: with --calib, {ONE_SHOT_DEFAULT}, or {WITH_RECOVERY_DEFAULT} when --train-data "
          f"is given too; {DATA_FREE_DEFAULT} without --calib")
    for name in criterion_names():
        print(f"{name:22} {describe_criterion(name)}")
        opts = criterion_option_defaults(name)
        if opts:
            print(" " * 23 + "options: " + ", ".join(f"{k}={v}" for k, v in opts.items()))
    return 0


def rerender(folder: Path) -> int:
    from ..report.schema import schema_errors

    path = folder / "report.json"
    if not path.is_file():
        raise InputError(f"{path} does not exist; pass an output folder written by compress")
    if path.stat().st_size > MAX_REPORT_BYTES:
        raise InputError(f"{path} is {path.stat().st_size / 2**20:.0f} MB, more than any report compress writes; "
                         "pass an output folder written by compress")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); it was not written by compress "
                         "or was edited") from None
    except (RecursionError, UnicodeDecodeError) as e:
        raise InputError(f"{path} cannot be read as a report ({type(e).__name__}); it was not written by compress "
                         "or was edited") from None
    errors = schema_errors(report) if isinstance(report, dict) else ["$: not a JSON object"]
    if errors:
        raise InputError(f"{path} does not match the report schema ({errors[0][:160]}); it was not written by "
                         "compress or was edited")
    from ..output import is_compress_output
    if not is_compress_output(folder):   # report.html is rewritten only in a folder compress wrote
        raise InputError(f"{folder} is not a folder compress wrote (no manifest.json listing its files); pass an "
                         "output folder of compress or compress validate")
    from ..report.html import render_html
    from edge_compress.deploy import atomic_write_text
    atomic_write_text(folder / "report.html", render_html(report))
    print(folder / "report.html")
    return 0


def list_targets(as_json: bool) -> int:
    from edge_compress.device_profiles import list_profiles

    from ..costmodel.host import fitted_here

    rows = []
    for p in list_profiles():
        cm = p.cost_model
        measured = p.measurement.method != "none"
        here = fitted_here(p)
        rows.append({"name": p.name, "engine": p.runtime.engine, "precision": p.runtime.precision,
                     "latency": "measured" if measured else "predicted",
                     "measured_how": {"local": "here, ONNX Runtime", "ssh": "on the device over SSH"}.get(
                         p.measurement.method, "not measurable from here"),
                     "cost_model": ("not fitted" if not cm.fitted else "fitted" if here is not False
                                    else "fitted elsewhere"), "cost_model_source": cm.source,
                     "description": p.description})
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'target':18} {'engine':12} {'prec.':5} {'latency':9} {'cost model':16} description")
    for r in rows:
        print(f"{r['name']:18} {r['engine']:12} {r['precision']:5} {r['latency']:9} {r['cost_model']:16} "
              f"{r['description']}")
    print("\nlatency: measured here (host) or predicted by the target's cost model (fitted to published or "
          "measured latencies, or not fitted);\n'fitted elsewhere': fitted on another CPU, re-measured at each run "
          "(compress fit-cost-model --target host fits it here). `compress --show-target NAME`: every number and "
          "its source")
    return 0


def list_archs(as_json: bool) -> int:
    from ..archs import arch_names, get_arch

    rows = [{"name": n, "input_shape": list(get_arch(n).input_shape), "num_classes": get_arch(n).num_classes,
             "description": get_arch(n).description} for n in arch_names()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']:18} {'x'.join(map(str, r['input_shape'])):11} {r['num_classes']:>5} classes  "
              f"{r['description']}")
    print("\nor your own: --arch package.module:callable [--arch-kwargs JSON]")
    return 0
