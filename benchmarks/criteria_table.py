"""Print the markdown table of benchmarks/results/criteria-*.json (one column pair per run).

    python benchmarks/criteria_table.py benchmarks/results/criteria-resnet56-*.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(paths: list[str]) -> None:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    names = [r["criterion"] for r in runs[0]["rows"]]
    head = ["criterion"] + [f"{r['arch']} {' '.join(f'{k} {v}' for k, v in r['budget'].items())}" for r in runs]
    print("| " + " | ".join(head) + " |")
    print("| --- |" + " ---: |" * len(runs))
    for name in names:
        cells = [f"`{name}`"]
        for r in runs:
            row = next((x for x in r["rows"] if x["criterion"] == name), None)
            if row is None or row.get("verdict") == "unreachable" or "top1_pruned" not in row:
                cells.append("unreachable" if row else "")
                continue
            share = row["latency_ms"] / row["original_latency_ms"] * 100
            cells.append(f"{row['top1_pruned'] * 100:.1f} / {row['top1_distilled'] * 100:.1f} "
                         f"({share:.0f} %, {row['macs'] / 1e6:.0f} M)")
        print("| " + " | ".join(cells) + " |")
    print()
    print("Cells: top-1 right after pruning / after one epoch of distillation (final latency as a share of the "
          "original, MACs). Base top-1: " + ", ".join(f"{r['arch']} {r['original_top1'] * 100:.2f} %" for r in runs[:1]))


if __name__ == "__main__":
    main(sys.argv[1:])
