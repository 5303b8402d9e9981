"""The two cost-model commands of the CLI: `fit-cost-model` and `cost-model` (see `main`)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import torch

from .explain import explain, format_rows, profile_layers_ort
from .fit import fit_for_target
from .measure import measure_models
from .model import factors_from_profile
from .profile_block import check_writable, write_cost_model
from .published import PUBLISHED

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compress", description="Cost-model commands.")
    sub = p.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit-cost-model", help="fit a profile's cost-model factors and show the fit's error")
    fit.add_argument("--target", required=True, help="host (measured here), or a target fitted to published "
                     f"numbers: {', '.join(PUBLISHED)}")
    fit.add_argument("--samples", type=int, default=24, help="randomly pruned ResNet-20/56 variants to measure")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--write", metavar="PROFILE.yaml", help="write the fitted cost_model block into this file "
                     "(created as a complete profile extending the target if it does not exist)")
    fit.add_argument("--json", action="store_true", help="print the result as JSON")
    show = sub.add_parser("cost-model", help="predicted vs measured latency per layer")
    show.add_argument("--target", required=True)
    show.add_argument("--arch", required=True, help="built-in architecture or package.module:callable")
    show.add_argument("--model", help="weights (a state dict) for --arch; random weights otherwise")
    show.add_argument("--input-shape", help="CxHxW, default: the architecture's")
    show.add_argument("--runs", type=int, default=200, help="profiled runs for the measured column")
    show.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from edge_compress.device_profiles import ProfileError

    from ..errors import EXIT_INPUT_ERROR, CompressError

    args = _parser().parse_args(argv)
    try:
        return _fit_command(args) if args.command == "fit-cost-model" else _show_command(args)
    except (CompressError, ProfileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", EXIT_INPUT_ERROR)


def _fit_command(args) -> int:
    from edge_compress.device_profiles import load_profile

    if args.write:
        check_writable(args.write)
    result, block = fit_for_target(args.target, args.samples, args.seed)
    if args.write:
        write_cost_model(args.write, block, load_profile(args.target))
    if args.json:
        print(json.dumps({"factors": dataclasses.asdict(result.factors), "free_factors": list(result.free_factors),
                          "errors": result.stats(), "predicted_ms": result.predicted_ms,
                          "measured_ms": result.measured_ms, "out_of_sample": list(result.out_of_sample),
                          "written_to": args.write}, indent=2))
    else:
        print(block, end="")
        print(f"# fit: {result.stats()}")
        for o in result.out_of_sample:
            print(f"# out of sample: {o['network']} published {o['published_ms']} ms, predicted "
                  f"{o['predicted_ms']} ms ({o['error_pct']:+.1f} %)")
        print(f"# written to {args.write}" if args.write else "# not written (pass --write PROFILE.yaml)")
    return 0


def _show_command(args) -> int:
    from edge_compress.device_profiles import load_profile

    from ..errors import InputError
    from ..model_io import load_model, resolve_arch

    profile = load_profile(args.target)
    if args.model:
        loaded = load_model(args.model, args.arch, {}, False)
        if loaded.kind == "torchscript":
            raise InputError(f"{args.model} is TorchScript: its layers cannot be read; pass a state dict with --arch")
        model, info = loaded.module, loaded.arch_info
    else:
        model, info = resolve_arch(args.arch)
    if args.input_shape:
        shape = tuple(int(v) for v in args.input_shape.lower().split("x"))
    elif info is not None:
        shape = info.input_shape
    else:
        raise InputError(f"--arch {args.arch}: input shape unknown; pass --input-shape CxHxW")
    shape = (profile.measurement.batch_size, *shape[-3:])
    measured, meta, total = None, {}, None
    if profile.measurement.method == "local":
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        measured, meta = profile_layers_ort(model, x, profile.runtime.opset, profile.measurement.threads, args.runs)
        (sample,) = measure_models([({}, model)], x, profile.runtime.opset, profile.measurement.threads)
        total = {k: sample.description["latency"][k] for k in ("median_ms", "cpu_median_ms")}
    rows = explain(model, shape, profile, measured or None)
    f = factors_from_profile(profile)
    summary = {"target": profile.name, "arch": args.arch, "input_shape": list(shape), "predicted_ms": None,
               "predicted_label": f"predicted: cost model of profile {profile.name} "
                                  f"({'fitted' if f.fitted else 'NOT fitted'})",
               "measured_ms": total, "per_layer_mapping": meta.get("mapping"), "other_ops_ms": meta.get("other_ms")}
    if f.usable:
        summary["predicted_ms"] = f.network_overhead_ms + sum(r["predicted_ms"] for r in rows)
    if args.json:
        print(json.dumps({"summary": summary, "rows": rows}, indent=2))
    else:
        print(format_rows(rows))
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
