"""Option-A (zero-padding) residual streams: one-shot top-1 of the pretrained CIFAR ResNets at a speed-up.

    python benchmarks/option_a.py --arch resnet56 --criteria auto,l1 --speedup 1.5 --json out.json

Per criterion: `compress --target host --arch ARCH MODEL --calib CALIB --speedup X` (latency measured by
ONNX Runtime on this machine, the profile's runs; calibration: 256 training images, seed 0), then the
pruned model's top-1 on `--test-samples` CIFAR-10 test images (seed 0; never used for calibration), the
original's top-1 on the same images, the measured latency ratio, MACs, and the residual-stream widths
(`conv1` and each stage's first `conv2`). The code measured is whichever `edge_compress` Python imports:
run it with PYTHONPATH set to a checkout to measure that checkout.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar_calib import load_split  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}
STREAMS = ("conv1", "layer2.0.conv2", "layer3.0.conv2")


def top1(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 250]).argmax(1) for i in range(0, len(x), 250)])
    return float((pred == y).float().mean())


def test_images(arch: str, samples: int, work: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from edge_compress.compress.archs import get_arch
    from edge_compress.compress.calib import load_calibration
    x, y = load_split("test", samples, 0)
    np.savez(work / "test.npz", x=x, y=y)
    info = get_arch(arch)
    data = load_calibration(str(work / "test.npz"), info.input_shape, samples, info.mean, info.std)
    return data.x, data.y


def run(arch: str, criterion: str, speedup: float, work: Path, calib: Path, target: str = "host",
        extra: tuple[str, ...] = ()) -> dict:
    out = work / f"{arch}-{criterion}"
    cmd = [sys.executable, "-m", "edge_compress", "--target", target, "--arch", arch,
           str(SHARED / "models" / WEIGHTS[arch]), "--calib", str(calib), "--speedup", str(speedup),
           "--out", str(out), "--json", "-q", *extra] + ([] if criterion == "auto" else ["--criterion", criterion])
    # from this checkout's root, so `python -m edge_compress` runs the code this script imports from it
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    report = json.loads((out / "report.json").read_text())
    groups = report["pruning"].get("groups_after") or report["pruning"]["groups"]
    # a stream's group: the one holding the stream's first producer, wherever the graph rooted it
    stream = {s: next((g for g in groups if s in g["members"]), None) for s in STREAMS}
    return {"report": report, "pruned": out / "model.pruned.pt",
            "streams": {s: f"{g['channels']}/{g['original_channels']}" if g else None for s, g in stream.items()},
            "unpruned_streams": {s: g["reason"] for s, g in stream.items() if g and not g["prunable"]}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet56", choices=sorted(WEIGHTS))
    p.add_argument("--criteria", default="auto,l1", help="comma-separated; auto is the product's default")
    p.add_argument("--speedup", type=float, default=1.5)
    p.add_argument("--test-samples", type=int, default=2000)
    p.add_argument("--target", default="host", help="a predicted target (raspberry-pi-4) gives a deterministic search")
    p.add_argument("--extra", default="", help="more compress options, space-separated")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args()
    from edge_compress.compress.model_io import load_model, load_pruned
    rows = []
    with tempfile.TemporaryDirectory(prefix="option-a-") as tmp:
        work = Path(tmp)
        cx, cy = load_split("train", 256, 0)
        np.savez(work / "calib.npz", x=cx, y=cy)
        x, y = test_images(args.arch, args.test_samples, work)
        original = load_model(SHARED / "models" / WEIGHTS[args.arch], arch=args.arch).module
        base = top1(original, x, y)
        for criterion in args.criteria.split(","):
            r = run(args.arch, criterion, args.speedup, work, work / "calib.npz", args.target, tuple(args.extra.split()))
            rep = r["report"]
            o, f = rep["original"], rep["final"]
            row = {"arch": args.arch, "criterion": criterion, "speedup": args.speedup, "target": args.target,
                   "top1_original": base, "top1_pruned": top1(load_pruned(r["pruned"]), x, y),
                   "latency_ms": [o["latency_ms"], f["latency_ms"]], "latency_kind": f.get("latency_kind"),
                   "latency_ratio": o["latency_ms"] / f["latency_ms"], "macs": [o["macs"], f["macs"]],
                   "blocks_removed": len(rep["pruning"].get("blocks_removed") or []), "streams": r["streams"],
                   "unpruned_streams": r["unpruned_streams"], "verdict": rep.get("verdict")}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"| arch | criterion | top-1 original | top-1 pruned | latency ratio (measured) | MACs | streams |")
    for r in rows:
        print(f"| {r['arch']} | {r['criterion']} | {100 * r['top1_original']:.1f} % | {100 * r['top1_pruned']:.1f} % "
              f"| {r['latency_ratio']:.2f}x | {r['macs'][1] / 1e6:.1f} M of {r['macs'][0] / 1e6:.1f} M "
              f"| {', '.join(str(v) for v in r['streams'].values())} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
