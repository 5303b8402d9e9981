"""How well the fitted cost models predict latency: host (measured here) and Jetson Nano (published).

    python benchmarks/cost_model_accuracy.py [--variants 20] [--seed 2026] [--json out.json]

1. Host: `--variants` randomly pruned variants each of the pretrained ResNet-20 and ResNet-56
   (../shared/models; random inner widths of every residual block, random channels kept), seed `--seed`,
   plus `--fit-variants` more each from `--fit-seed`; all measured interleaved in one session with ONNX
   Runtime CPU (the profile's threads, batch 1). The evaluated variants are predicted twice:
   "session": factors fitted in this run on the fit variants only (same code as `compress
   fit-cost-model`), so machine-state drift between fitting and evaluating is out of the comparison;
   "stored": the factors in device_profiles/host.yaml, fitted earlier on seed 0, drift included;
   "anchored": stored, times measured / predicted of the unpruned ResNet-20/56 measured in the same
   session (the correction the closed loop applies).
   Two measured medians per variant: wall clock (what compress/evaluate.py reports) and the calling
   thread's CPU time (the same runs, without the time spent waiting for a core on this shared machine).
2. Jetson Nano: ResNet-18/34/50 predicted with device_profiles/jetson-nano.yaml vs the published
   TensorRT FP16 latencies they were fitted to (a consistency check, 3 points for 3 factors), plus
   VGG-16 and AlexNet from the same published table, which the fit never saw (out of sample).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from edge_compress.compress.archs import get_arch  # noqa: E402
from edge_compress.compress.costmodel.fit import HOST_ALIGNMENTS, HOST_FREE, fit_factors  # noqa: E402
from edge_compress.compress.costmodel.measure import measure_models  # noqa: E402
from edge_compress.compress.costmodel.model import factors_from_profile, layer_costs, predict_latency_ms  # noqa: E402
from edge_compress.compress.costmodel.published import NANO_PUBLISHED_MS, NANO_SOURCE  # noqa: E402
from edge_compress.compress.costmodel.variants import random_variants  # noqa: E402
from edge_compress.compress.model_io import load_model  # noqa: E402
from edge_compress.deploy import environment_info  # noqa: E402
from edge_compress.device_profiles import load_profile  # noqa: E402

MODELS = ROOT.parent / "shared" / "models"
WEIGHTS = {"resnet20": MODELS / "resnet20-12fca82f.th", "resnet56": MODELS / "resnet56-4bfd9763.th"}
# Same published table as NANO_PUBLISHED_MS (docs/devices.md), models the fit did not use.
NANO_OUT_OF_SAMPLE_MS = {"vgg16": 85.1, "alexnet": 14.7}


def vgg16() -> nn.Module:
    """torchvision's VGG-16 (no BN): 13 3x3 convs, 3 FC layers (138 M params)."""
    layers, c = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(512 * 49, 4096), nn.ReLU(),
                         nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1000))


def alexnet() -> nn.Module:
    """torchvision's AlexNet (61 M params)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, 2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2), nn.AdaptiveAvgPool2d(6),
        nn.Flatten(), nn.Linear(256 * 36, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1000))


def host_rows(variants: int, seed: int, fit_variants: int, fit_seed: int, rounds: int,
              runs_per_round: int) -> tuple[list[dict], dict]:
    profile = load_profile("host")
    fit = profile.cost_model.fit
    stored_seed = re.search(r"--seed (\d+)", fit.command or "") if fit else None
    if seed in (fit_seed, int(stored_seed.group(1)) if stored_seed else None):
        raise SystemExit(f"--seed {seed}: evaluate on other variants than the fits saw (fit seed {fit_seed}, "
                         f"profile's fit.command: {fit.command if fit else None})")
    stored = factors_from_profile(profile)
    models = []
    for j, (arch, path) in enumerate(WEIGHTS.items()):
        sd = load_model(path, arch, {}, False).module.state_dict()
        for role, n, sd_seed in (("fit", fit_variants, fit_seed), ("eval", variants, seed)):
            for desc, m in random_variants(arch, n, sd_seed * 100 + j, sd, profile.pruning.channel_multiple,
                                           profile.pruning.min_channels):
                models.append(({**desc, "role": role}, m))
        anchor = get_arch(arch).factory().eval()
        anchor.load_state_dict(sd)
        models.append(({"arch": arch, "index": -1, "widths": {}, "role": "anchor"}, anchor))
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    load_before = os.getloadavg()
    samples = measure_models(models, x, profile.runtime.opset, profile.measurement.threads, "cpu",
                             warmup=20, rounds=rounds, runs_per_round=runs_per_round)
    fit_set = [s for s in samples if s.description["role"] == "fit"]
    session = fit_factors(fit_set, stored, HOST_FREE, HOST_ALIGNMENTS)
    # What the closed loop does: scale the prediction by measured / predicted of a model measured now.
    anchors = [s for s in samples if s.description["role"] == "anchor"]
    ratio = {clock: float(np.exp(np.mean([np.log(a.description["latency"][key] / predict_latency_ms(a.costs, stored))
                                          for a in anchors])))
             for clock, key in (("wall", "median_ms"), ("cpu", "cpu_median_ms"))}
    rows = []
    for s in samples:
        if s.description["role"] != "eval":
            continue
        lat = s.description["latency"]
        row = {"arch": s.description["arch"], "index": s.description["index"], "widths": s.description["widths"],
               "macs": sum(c.macs for c in s.costs), "measured_wall_median_ms": lat["median_ms"],
               "measured_cpu_median_ms": lat["cpu_median_ms"], "wall_p90_ms": lat["p90_ms"], "runs": lat["runs"]}
        for name, f in (("session", session.factors), ("stored", stored)):
            pred = predict_latency_ms(s.costs, f)
            row[f"predicted_{name}_ms"] = pred
            row[f"error_{name}_wall_pct"] = 100 * (pred / lat["median_ms"] - 1)
            row[f"error_{name}_cpu_pct"] = 100 * (pred / lat["cpu_median_ms"] - 1)
        for clock, key in (("wall", "median_ms"), ("cpu", "cpu_median_ms")):
            row[f"error_anchored_{clock}_pct"] = 100 * (row["predicted_stored_ms"] * ratio[clock] / lat[key] - 1)
        rows.append(row)
    meta = {"stored_factors": dataclasses.asdict(stored), "stored_fit": fit.__dict__ if fit else None,
            "session_factors": dataclasses.asdict(session.factors), "session_fit_errors": session.stats(),
            "session_free_factors": list(session.free_factors), "anchor_ratio": ratio,
            "anchors": [{"arch": a.description["arch"], "measured_wall_median_ms": a.description["latency"]["median_ms"],
                         "measured_cpu_median_ms": a.description["latency"]["cpu_median_ms"],
                         "predicted_stored_ms": predict_latency_ms(a.costs, stored)} for a in anchors],
            "seed": seed, "fit_seed": fit_seed,
            "variants_per_arch": variants, "fit_variants_per_arch": fit_variants,
            "timing": {"warmup": 20, "rounds": rounds, "runs_per_round": runs_per_round, "interleaved": True},
            "load_average_before": load_before, "load_average_after": os.getloadavg()}
    return rows, meta


def nano_rows() -> list[dict]:
    f = factors_from_profile(load_profile("jetson-nano"))
    x = torch.zeros(1, 3, 224, 224)
    models = [(a, get_arch(a).factory(), ms, "fitted on it") for a, ms in NANO_PUBLISHED_MS.items()]
    models += [(a, fn(), NANO_OUT_OF_SAMPLE_MS[a], "out of sample") for a, fn in (("vgg16", vgg16), ("alexnet", alexnet))]
    rows = []
    for name, model, published, role in models:
        pred = predict_latency_ms(layer_costs(model.eval(), x), f)
        rows.append({"arch": name, "role": role, "published_ms": published, "predicted_ms": pred,
                     "error_pct": 100 * (pred / published - 1)})
    return rows


def share(errors, limit: float) -> float:
    return float(np.mean(np.abs(errors) <= limit))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", type=int, default=20, help="evaluated variants per architecture")
    p.add_argument("--seed", type=int, default=2026, help="seed of the evaluated variants")
    p.add_argument("--fit-variants", type=int, default=12, help="variants per architecture for the in-session fit")
    p.add_argument("--fit-seed", type=int, default=1, help="seed of the in-session fit's variants")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--runs-per-round", type=int, default=10)
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "cost_model_accuracy.json"))
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)

    rows, meta = host_rows(args.variants, args.seed, args.fit_variants, args.fit_seed, args.rounds,
                           args.runs_per_round)
    print(f"{'':<14} {'':>7} {'measured median':>17} | {'session fit':>14} | {'stored factors':>14} | anchored")
    print(f"{'arch':<9} {'#':>4} {'MMACs':>7} {'wall ms':>8} {'cpu ms':>8} | {'pred ms':>7} {'err %':>6} | "
          f"{'pred ms':>7} {'err %':>6} | {'err %':>6}")
    for r in rows:
        print(f"{r['arch']:<9} {r['index']:>4} {r['macs'] / 1e6:>7.1f} {r['measured_wall_median_ms']:>8.3f} "
              f"{r['measured_cpu_median_ms']:>8.3f} | {r['predicted_session_ms']:>7.3f} {r['error_session_wall_pct']:>+6.1f} | "
              f"{r['predicted_stored_ms']:>7.3f} {r['error_stored_wall_pct']:>+6.1f} | {r['error_anchored_wall_pct']:>+6.1f}")
    print("(errors vs the wall-clock median; vs the CPU-time median in the JSON and below)")
    keys = [f"{f}_{c}" for f in ("session", "stored", "anchored") for c in ("wall", "cpu")]
    summary = {}
    for arch in ("resnet20", "resnet56", "all"):
        sel = [r for r in rows if arch in ("all", r["arch"])]
        summary[arch] = {"variants": len(sel)}
        for key in keys:
            e = np.abs([r[f"error_{key}_pct"] for r in sel])
            summary[arch][key] = {"share_within_10pct": share(e, 10), "median_abs_error_pct": float(np.median(e)),
                                  "max_abs_error_pct": float(e.max())}
    print(f"\nshare within +-10 % (median |error|, max |error|), {len(rows)} evaluated variants")
    for key in keys:
        print(f"  {key:<14}" + "  ".join(
            f"{arch} {summary[arch][key]['share_within_10pct']:>4.0%} ({summary[arch][key]['median_abs_error_pct']:.1f} %, "
            f"{summary[arch][key]['max_abs_error_pct']:.1f} %)" for arch in ("resnet20", "resnet56", "all")))
    print("session = factors fitted in this run on other variants (seed %d), measured interleaved with these; "
          "stored = device_profiles/host.yaml (fitted %s on seed 0); anchored = stored x (measured / predicted) of "
          "the unpruned ResNet-20/56 measured in this run (%.3f wall, %.3f cpu), as the closed loop corrects"
          % (args.fit_seed, meta["stored_fit"]["date"] if meta["stored_fit"] else "never",
             meta["anchor_ratio"]["wall"], meta["anchor_ratio"]["cpu"]))
    print(f"session factors: {meta['session_factors']}; fit errors {meta['session_fit_errors']}")
    print(f"load average before/after measuring: {meta['load_average_before']} / {meta['load_average_after']}")

    nano = nano_rows()
    print(f"\n{'jetson-nano':<9} {'published':>9} {'predicted':>9} {'err %':>7}  role ({NANO_SOURCE})")
    for r in nano:
        print(f"{r['arch']:<11} {r['published_ms']:>9.1f} {r['predicted_ms']:>9.2f} {r['error_pct']:>+7.1f}  {r['role']}")

    out = {"command": "python " + " ".join([str(Path(sys.argv[0]).relative_to(ROOT)
                                              if Path(sys.argv[0]).is_absolute() else sys.argv[0]),
                                             *(argv if argv is not None else sys.argv[1:])]),
           "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": environment_info(),
           "torch": torch.__version__, "host": {"summary": summary, "meta": meta, "rows": rows},
           "jetson_nano": {"rows": nano, "source": NANO_SOURCE, "label": "predicted vs published, not measured here"}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
