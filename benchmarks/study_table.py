"""Markdown table of benchmarks/info_study.py results: mean ± spread over seeds, one row per configuration.

    python benchmarks/study_table.py [--merge] benchmarks/results/study-resnet56-macs50.json [more.json ...]

Each file is one column group (its architecture and budget); with --merge, files with the same
architecture, budget and recovery share a column (the first file's row wins for a repeated config and seed). The spread is the population standard
deviation over seeds (calibration draws); the test images are the same for every seed and arm.
"""
from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

BASELINES = {"l1", "l2", "fpgm", "lamp", "taylor", "bn-scale"}
DEFAULT = "capacity-independence"
PAIRED = (DEFAULT, "consumer-mi", "consumer-mi:tie=0", "consumer-mi:residual=false,tie=0")   # arms whose per-seed difference to the best baseline is printed
OLD_RECOVERY = {"epochs": 1.0, "lr": 0.01, "train_samples": 5000}   # the pipeline's default with calibration data


def _stat(v: list[float]) -> str:
    if not v:
        return ""
    spread = statistics.pstdev(v) if len(v) > 1 else 0.0
    return f"{100 * statistics.mean(v):.2f} ± {100 * spread:.2f}"


def summarise(run: dict) -> dict[str, dict]:
    by = defaultdict(lambda: {"top1": [], "top1_recovered": [], "macs": [], "measured_ms": [], "seeds": 0,
                              "by_seed": {}})
    for r in run["rows"]:
        s = by[r["config"]]
        s["top1"].append(r["top1"])
        s["by_seed"][r["seed"]] = r
        if str(r.get("latency_kind", "")).startswith("measured"):
            s["measured_ms"].append(r["latency_ms"])
        if "top1_recovered" in r:
            s["top1_recovered"].append(r["top1_recovered"])
        s["macs"].append(r["macs"])
        s["seeds"] += 1
    return by


def _paired(a: dict, b: dict, key: str) -> list[float]:
    """Per seed present in both arms: a minus b (the same calibration draw and test images)."""
    return [a["by_seed"][k][key] - b["by_seed"][k][key] for k in sorted(a["by_seed"])
            if k in b["by_seed"] and key in a["by_seed"][k] and key in b["by_seed"][k]]


def _best(cands: list[str], s: dict, key: str) -> str:
    """The baseline with the highest mean `key` over the seeds every candidate ran, so a baseline run on
    fewer (luckier) seeds does not win by its draw."""
    common = set.intersection(*[{k for k, r in s[c]["by_seed"].items() if key in r} for c in cands])
    return max(cands, key=lambda c: statistics.mean([s[c]["by_seed"][k][key] for k in common] if common else s[c][key]))


def _merge(runs: list[dict]) -> list[dict]:
    """One column per (architecture, budget, recovery): rows of several runs pooled, each (config, seed) once."""
    out: dict[str, dict] = {}
    for r in runs:
        recovery = r.get("recovery")
        if recovery is None and any("top1_recovered" in x for x in r["rows"]):
            recovery = OLD_RECOVERY   # runs made before the harness recorded its recovery settings
        key = json.dumps([r["arch"], r["budget"], r.get("budget_rule"), recovery, r.get("calib_samples") or 256],
                         sort_keys=True)
        if key not in out:
            out[key] = {**r, "rows": []}
        seen = {(x["config"], x["seed"]) for x in out[key]["rows"]}
        out[key]["rows"] += [x for x in r["rows"] if (x["config"], x["seed"]) not in seen]
    return list(out.values())


def main(paths: list[str]) -> None:
    merge = "--merge" in paths
    runs = [json.loads(Path(p).read_text()) for p in paths if p != "--merge"]
    if merge:
        runs = _merge(runs)
    sums = [summarise(r) for r in runs]
    configs = list(dict.fromkeys(c for s in sums for c in s))
    head = ["configuration"]
    for r in runs:
        budget = ", ".join(f"{k} {v / r['original_macs'] * 100:.0f} %" if k == "macs" else f"{k} {v:.3g}"
                           for k, v in r["budget"].items() if v is not None)
        if r.get("reference_macs_fraction"):
            budget = f"latency of l1 at {r['reference_macs_fraction']:.0%} MACs"
        n = r.get("calib_samples") or 256
        head.append(f"{r['arch']} {budget}" + (f", N={n}" if n != 256 else ""))
    print("| " + " | ".join(head) + " |")
    print("| --- |" + " ---: |" * len(runs))
    for c in configs:
        cells = [f"`{c}`"]
        for s in sums:
            if c not in s:
                cells.append("")
                continue
            x = s[c]
            cell = _stat(x["top1"])
            if x["top1_recovered"]:
                cell += f" / {_stat(x['top1_recovered'])}"
            ms = f", {statistics.mean(x['measured_ms']):.3f} ms" if x["measured_ms"] else ""
            cells.append(cell + f" ({statistics.mean(x['macs']) / 1e6:.1f} M{ms}, n={x['seeds']})")
        print("| " + " | ".join(cells) + " |")
    print()
    for r, s in zip(runs, sums):
        if r.get("reference"):
            ref = list(r["reference"].values())
            pred = ", ".join(f"{x['predicted_ms']:.3f}" for x in ref)
            meas = ", ".join(f"{x['measured_ms']:.3f}" for x in ref)
            print(f"{r['arch']}: the budget, per seed, is l1's latency at {r['reference_macs_fraction']:.0%} MACs: "
                  f"predicted {pred} ms; the same models measured {meas} ms.")
        base = [c for c in s if c in BASELINES]
        if not base:
            continue
        best = _best(base, s, "top1")
        line = (f"{r['arch']}: base top-1 {100 * r['original_top1']:.2f} % on {r['test_samples']} test images; best "
                f"Torch-Pruning criterion one-shot: `{best}` {100 * statistics.mean(s[best]['top1']):.2f}")
        rec = [c for c in base if s[c]["top1_recovered"]]
        if rec:
            best_r = _best(rec, s, "top1_recovered")
            line += f"; after recovery: `{best_r}` {100 * statistics.mean(s[best_r]['top1_recovered']):.2f}"
        print(line + ".")
        for arm in [c for c in PAIRED if c in s]:
            label = f"default `{arm}`" if arm == DEFAULT else f"`{arm}`"
            for key, what in (("top1", "one-shot"), ("top1_recovered", "after recovery")):
                ref = best if key == "top1" else (best_r if rec else None)
                if ref is None or not s[arm][key]:
                    continue
                d = _paired(s[arm], s[ref], key)
                if d:
                    # the standard error of the mean paired difference: how far a seed-to-seed swing moves it
                    se = f"; standard error {100 * statistics.stdev(d) / len(d) ** 0.5:.2f}" if len(d) > 1 else ""
                    print(f"  {label} minus `{ref}` {what}, paired over {len(d)} seeds: "
                          f"{100 * statistics.mean(d):+.2f} (per seed {', '.join(f'{100 * v:+.2f}' for v in d)}{se})")


if __name__ == "__main__":
    main(sys.argv[1:])
