"""Markdown table of benchmarks/info_study.py results: mean ± spread over seeds, one row per configuration.

    python benchmarks/study_table.py benchmarks/results/study-resnet56-macs50.json [more.json ...]

Each file is one column group (its architecture and budget). The spread is the population standard
deviation over seeds (calibration draws); the test images are the same for every seed and arm.
"""
from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

BASELINES = {"l1", "l2", "fpgm", "lamp", "taylor", "bn-scale"}


def _stat(v: list[float]) -> str:
    if not v:
        return ""
    spread = statistics.pstdev(v) if len(v) > 1 else 0.0
    return f"{100 * statistics.mean(v):.2f} ± {100 * spread:.2f}"


def summarise(run: dict) -> dict[str, dict]:
    by = defaultdict(lambda: {"top1": [], "top1_recovered": [], "macs": [], "seeds": 0})
    for r in run["rows"]:
        s = by[r["config"]]
        s["top1"].append(r["top1"])
        if "top1_recovered" in r:
            s["top1_recovered"].append(r["top1_recovered"])
        s["macs"].append(r["macs"])
        s["seeds"] += 1
    return by


def main(paths: list[str]) -> None:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    sums = [summarise(r) for r in runs]
    configs = list(dict.fromkeys(c for s in sums for c in s))
    head = ["configuration"]
    for r in runs:
        budget = ", ".join(f"{k} {v / r['original_macs'] * 100:.0f} %" if k == "macs" else f"{k} {v}"
                           for k, v in r["budget"].items() if v is not None)
        n = r.get("calib_samples", 256)
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
            cells.append(cell + f" ({statistics.mean(x['macs']) / 1e6:.1f} M, n={x['seeds']})")
        print("| " + " | ".join(cells) + " |")
    print()
    for r, s in zip(runs, sums):
        base = [c for c in s if c in BASELINES]
        if not base:
            continue
        best = max(base, key=lambda c: statistics.mean(s[c]["top1"]))
        line = (f"{r['arch']}: base top-1 {100 * r['original_top1']:.2f} % on {r['test_samples']} test images; best "
                f"Torch-Pruning criterion one-shot: `{best}` {100 * statistics.mean(s[best]['top1']):.2f}")
        rec = [c for c in base if s[c]["top1_recovered"]]
        if rec:
            best_r = max(rec, key=lambda c: statistics.mean(s[c]["top1_recovered"]))
            line += f"; after recovery: `{best_r}` {100 * statistics.mean(s[best_r]['top1_recovered']):.2f}"
        print(line + ".")


if __name__ == "__main__":
    main(sys.argv[1:])
