"""Golden outputs: the bytes and numbers a refactoring must leave unchanged.

    python benchmarks/golden.py record  --json benchmarks/results/golden.json
    python benchmarks/golden.py compare --json benchmarks/results/golden.json

`record` runs the predicted configurations below through the installed `compress` command (ResNet-20
and ResNet-56 pretrained, the example CNN with seeded weights; consumer-mi, l1, capacity-independence;
one run with recovery) and the study's seed-0 top-1 at 50 % of the MACs on ResNet-20 for l1,
consumer-mi and capacity-independence, and writes the ONNX sha256 and the report numbers of each.
`compare` runs them again and lists every difference; exit 1 on any. Predicted runs only: a measured
latency differs from run to run. The same machine (CPU, thread count, library versions) gives the same
bytes; another CPU rounds differently, so record and compare on one machine.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

R20 = str(SHARED / "models" / "resnet20-12fca82f.th")
R56 = str(SHARED / "models" / "resnet56-4bfd9763.th")

# name -> arguments after `compress` (CALIB/ECALIB/TRAIN/EXAMPLE replaced by files made in the run)
RUNS = {
    "resnet20-rpi4-speedup1.5-consumer-mi": ["--target", "raspberry-pi-4", "--arch", "resnet20", R20,
                                              "--calib", "CALIB", "--speedup", "1.5"],
    "resnet20-nano-macs50-l1": ["--target", "jetson-nano", "--arch", "resnet20", R20, "--calib", "CALIB",
                                "--macs", "50%", "--criterion", "l1"],
    "resnet20-nano-macs50-capacity-independence": ["--target", "jetson-nano", "--arch", "resnet20", R20,
                                                   "--calib", "CALIB", "--macs", "50%",
                                                   "--criterion", "capacity-independence"],
    "resnet20-rpi4-uniform-params60": ["--target", "raspberry-pi-4", "--arch", "resnet20", R20, "--calib", "CALIB",
                                       "--params", "60%", "--selection", "uniform", "--criterion", "l1"],
    "resnet56-rpi4-speedup1.5-consumer-mi": ["--target", "raspberry-pi-4", "--arch", "resnet56", R56,
                                              "--calib", "CALIB", "--speedup", "1.5"],
    "resnet56-nano-macs50-consumer-mi": ["--target", "jetson-nano", "--arch", "resnet56", R56,
                                         "--calib", "CALIB", "--macs", "50%"],
    "resnet20-rpi4-speedup1.5-recovered": ["--target", "raspberry-pi-4", "--arch", "resnet20", R20,
                                           "--calib", "CALIB", "--speedup", "1.5", "--train-data", "TRAIN",
                                           "--max-steps", "8", "--train-device", "cpu"],
    "example-cnn-rpi4-speedup1.5": ["--target", "raspberry-pi-4", "--arch", "example-cnn", "EXAMPLE",
                                    "--arch-kwargs", '{"width": 32}', "--calib", "ECALIB", "--speedup", "1.5"],
}
STUDY = ["--arch", "resnet20", "--macs", "0.5", "--seeds", "0", "--test-samples", "1000",
         "--configs", "l1;consumer-mi;capacity-independence"]
# the report numbers a refactoring must not change (paths into report.json)
NUMBERS = ["budget", "original", "final", "accuracy", "verdict"]


def _inputs(work: Path) -> dict[str, str]:
    import torch
    from benchmarks.cifar_calib import load_split
    x, y = load_split("train", 256, 0)
    np.savez(work / "calib.npz", x=x, y=y)
    x, y = load_split("train", 512, 1)
    np.savez(work / "train.npz", x=x, y=y)
    from edge_compress.compress.archs import get_arch
    torch.manual_seed(0)
    torch.save(get_arch("example-cnn").factory(width=32).state_dict(), work / "example.pt")
    np.savez(work / "example-calib.npz", x=load_split("test", 256, 0)[0])   # no labels: 8 classes, not CIFAR's 10
    return {"ECALIB": str(work / "example-calib.npz"), "CALIB": str(work / "calib.npz"), "TRAIN": str(work / "train.npz"), "EXAMPLE": str(work / "example.pt")}


def _report_numbers(report: dict) -> dict:
    out = {key: report.get(key) for key in NUMBERS}
    for side in ("original", "final"):
        if isinstance(out.get(side), dict):
            out[side] = {k: v for k, v in out[side].items() if k not in ("latency_kind", "memory_kind")}
    if isinstance(out.get("accuracy"), dict):
        out["accuracy"] = {k: v for k, v in out["accuracy"].items() if isinstance(v, (int, float))}
    pruning = report.get("pruning") or {}
    out["channels"] = {g["root"]: g["channels"] for g in pruning.get("groups_after") or []}
    out["rounds"] = len(pruning.get("rounds") or [])
    out["blocks_removed"] = pruning.get("blocks_removed")
    return out


def run_all(compress: list[str]) -> dict:
    results = {}
    with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
        work = Path(tmp)
        files = _inputs(work)
        for name, args in RUNS.items():
            out = work / name
            cmd = compress + [files.get(a, a) for a in args] + ["--out", str(out), "--json", "-q"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            row = {"exit": proc.returncode}
            if (out / "model.onnx").exists():
                row["onnx_sha256"] = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
            if (out / "report.json").exists():
                row["report"] = _report_numbers(json.loads((out / "report.json").read_text()))
            if proc.returncode not in (0, 1):
                row["stderr"] = proc.stderr[-2000:]
            results[name] = row
            print(name, row["exit"], row.get("onnx_sha256", "")[:16], flush=True)
        study = work / "study.json"
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "info_study.py"), *STUDY, "--json", str(study)],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            rows = json.loads(study.read_text())
            results["study-resnet20-macs50-seed0"] = {"exit": 0, "top1": _study_top1(rows)}
        else:
            results["study-resnet20-macs50-seed0"] = {"exit": proc.returncode, "stderr": proc.stderr[-2000:]}
        print("study", results["study-resnet20-macs50-seed0"], flush=True)
    return results


def _study_top1(rows) -> dict:
    found = {}
    for row in rows.get("rows", rows) if isinstance(rows, dict) else rows:
        if isinstance(row, dict) and "config" in row and "top1" in row:
            found[row["config"]] = row["top1"]
    if not found:
        raise SystemExit("golden: the study wrote no rows with 'config' and 'top1'; has info_study.py's output changed?")
    return found


def _flatten(o, prefix="") -> dict:
    if isinstance(o, dict):
        return {k2: v2 for k, v in o.items() for k2, v2 in _flatten(v, f"{prefix}/{k}").items()}
    if isinstance(o, list):
        return {k2: v2 for i, v in enumerate(o) for k2, v2 in _flatten(v, f"{prefix}/{i}").items()}
    return {prefix: o}


def diff(a: dict, b: dict) -> list[str]:
    fa, fb = _flatten(a), _flatten(b)
    return [f"{k}: {fa.get(k, '<missing>')!r} -> {fb.get(k, '<missing>')!r}"
            for k in sorted(set(fa) | set(fb)) if fa.get(k, "<missing>") != fb.get(k, "<missing>")
            and not k.endswith("/stderr")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("record", "compare"))
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "golden.json")
    p.add_argument("--compress", default=str(Path(sys.executable).parent / "compress"),
                   help="the compress command to run, e.g. 'python -m edge_compress' (default: the one beside this Python)")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    results = run_all(shlex.split(args.compress))
    if args.mode == "record":
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.json}")
        return 0
    golden = json.loads(args.json.read_text())
    changes = diff(golden, results)
    for line in changes:
        print(line)
    print(f"{len(changes)} differences from {args.json}")
    return 1 if changes else 0


if __name__ == "__main__":
    sys.exit(main())
