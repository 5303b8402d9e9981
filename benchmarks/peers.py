"""Side by side with Torch-Pruning as its users run it, at equal measured latency, across model families.

    python benchmarks/peers.py run --families resnet20 resnet56 vgg16_bn --speedups 1.3 1.5 2.0 [--recover]
    python benchmarks/peers.py table                       # BENCHMARKS.md tables from the results file

Arms, per family and speed-up:
- `ours`: the default pipeline, `compress(weights, target="host", speedup=S, calib=<256 training images>)`
  (with `train_data=<5000 labelled training images>` for the recovered arm: the pipeline's own recovery).
- Torch-Pruning 1.6 `MetaPruner` with `MagnitudeImportance(p=1)` (L1), `TaylorImportance` (gradients of the
  cross-entropy on the same 256 calibration images) and `LAMPImportance`, each `uniform` (one ratio for every
  layer) and `global` (one threshold across layers), `round_to=4` (the host profile's channel multiple), the
  classifier ignored; on option-A CIFAR ResNets the residual streams (stem and every block's second conv) are
  ignored as well, as their zero-padding shortcut requires. Its pruning ratio is bisected until its measured
  latency equals ours; BatchNorm statistics are re-estimated on the same 256 images (the product's
  `recalibrate_batchnorm`). Recovered arms get the product's `recover` with its defaults (one epoch, SGD lr 0.01,
  cosine, batch 64), fine-tuning on the same 5000 labelled images as ours.

Every arm is timed by this script in the same way: the arm's ONNX export and the original's, ONNX Runtime CPU,
one thread, batch 1, interleaved in blocks (the product's `measure_interleaved`), 20 warm-up and 200 timed
runs each; the latency column is the ratio of medians to the original's in that same measurement. Top-1 is on
2000 CIFAR-10 test images (seed 0; never used for calibration or training), MACs from Torch-Pruning's counter.
Results go to benchmarks/results/peers.jsonl, one JSON line per arm.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cifar_calib import load_split  # noqa: E402
from train_cifar import normalise as normalise_uint8  # noqa: E402

from edge_compress.compress.api import compress, load_pruned  # noqa: E402
from edge_compress.compress.archs import get_arch  # noqa: E402
from edge_compress.compress.archs.resnet_cifar import BasicBlock, PadShortcut  # noqa: E402
from edge_compress.compress.bn_recalibration import recalibrate_batchnorm  # noqa: E402
from edge_compress.compress.config import RecoveryOptions  # noqa: E402
from edge_compress.compress.model_io import load_model  # noqa: E402
from edge_compress.compress.recovery import recover  # noqa: E402
from edge_compress.deploy.runners.base import measure_interleaved  # noqa: E402
from edge_compress.deploy.runners.ort import OrtRunner  # noqa: E402
from edge_compress.export.onnx_export import export_onnx  # noqa: E402

SHARED = HERE.parents[1] / "shared" / "models"
RESULTS = HERE / "results" / "peers.jsonl"
FAMILIES = {
    "resnet20": ("resnet20", {}, SHARED / "resnet20-12fca82f.th"),
    "resnet56": ("resnet56", {}, SHARED / "resnet56-4bfd9763.th"),
    "vgg16_bn": ("vgg16_bn", {"width_mult": 0.25}, HERE / "weights" / "vgg16_bn-w0.25.pt"),
    "mobilenetv2": ("mobilenetv2", {"width_mult": 0.5}, HERE / "weights" / "mobilenetv2-w0.5.pt"),
}
IMPORTANCES = {"l1": lambda: tp.importance.MagnitudeImportance(p=1), "taylor": lambda: tp.importance.TaylorImportance(),
               "lamp": lambda: tp.importance.LAMPImportance(p=2)}
WARMUP, RUNS = 20, 200
MATCH = 0.05   # a Torch-Pruning arm counts as "at equal latency" within 5 % of ours


def normalise(x: np.ndarray, info) -> torch.Tensor:
    """NHWC uint8 images as the model's normalised NCHW input (what `compress` does with uint8 data)."""
    return normalise_uint8(torch.from_numpy(x), info.mean, info.std)


@torch.no_grad()
def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float(sum(int((model(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum()) for i in range(0, len(x), 500)) / len(x))


def macs(model: nn.Module, shape) -> float:
    return float(tp.utils.count_ops_and_params(model, torch.zeros(1, *shape))[0])


class Timer:
    """Latency of a model relative to the original's, both exported and timed interleaved in one measurement."""

    def __init__(self, original: nn.Module, shape, work: Path):
        self.work, self.example = work, torch.randn(1, *shape)
        self.original = self._export(original, "original")
        self.feed = {"input": self.example.numpy()}

    def _export(self, model: nn.Module, name: str) -> Path:
        path = self.work / f"{name}.onnx"
        export_onnx(model.eval(), self.example, path, opset=17)
        return path

    def ratio(self, model: nn.Module | Path) -> float:
        path = model if isinstance(model, Path) else self._export(model, "candidate")
        runners = [OrtRunner(self.original, threads=1), OrtRunner(path, threads=1)]
        for r in runners:
            r.activate()
        try:
            a, b = measure_interleaved(runners, [self.feed, self.feed], WARMUP, RUNS)
        finally:
            for r in runners:
                r.deactivate()
        return b.median_ms / a.median_ms


def stream_layers(model: nn.Module) -> list[nn.Module]:
    """Option-A CIFAR ResNets: the layers writing the residual streams, which Torch-Pruning's users must ignore."""
    if not any(isinstance(m, PadShortcut) for m in model.modules()):
        return []
    return [model.conv1] + [m.conv2 for m in model.modules() if isinstance(m, BasicBlock)]


def tp_prune(model, importance: str, global_pruning: bool, ratio: float, calib) -> nn.Module:
    pruned = copy.deepcopy(model).eval()
    x, y = calib
    classifier = [m for m in pruned.modules() if isinstance(m, nn.Linear)][-1:]
    pruner = tp.pruner.MetaPruner(pruned, x[:1], IMPORTANCES[importance](), pruning_ratio=ratio,
                                  global_pruning=global_pruning, round_to=4,
                                  ignored_layers=classifier + stream_layers(pruned))
    if importance == "taylor":
        pruned.zero_grad()
        F.cross_entropy(pruned(x), y).backward()
    pruner.step()
    pruned.zero_grad(set_to_none=True)
    recalibrate_batchnorm(pruned, x)
    return pruned.eval()


def match_latency(model, importance, global_pruning, target, calib, timer, steps=6):
    """Bisect Torch-Pruning's ratio until its measured latency ratio is closest to `target`."""
    lo, hi, best = 0.0, 0.9, None
    for _ in range(steps):
        r = (lo + hi) / 2
        pruned = tp_prune(model, importance, global_pruning, r, calib)
        got = timer.ratio(pruned)
        if best is None or abs(got - target) < abs(best[2] - target):
            best = (r, pruned, got)
        lo, hi = (r, hi) if got > target else (lo, r)
    return best


def run_family(name: str, speedups, recovered: bool, importances, modes, out_file: Path) -> None:
    arch, kwargs, weights = FAMILIES[name]
    info = get_arch(arch)
    if not weights.is_file():
        raise SystemExit(f"{weights} is missing: train it with benchmarks/train_cifar.py (see its docstring)")
    original = load_model(weights, arch=arch, arch_kwargs=kwargs).module.eval()
    xc, yc = load_split("train", 256, 1)
    xt, yt = load_split("train", 5000, 2)
    xe, ye = load_split("test", 2000, 0)
    calib = (normalise(xc, info), torch.from_numpy(yc))
    train = (normalise(xt, info), torch.from_numpy(yt))
    test = (normalise(xe, info), torch.from_numpy(ye))
    base = top1(original, *test)
    shape = info.input_shape
    with tempfile.TemporaryDirectory(prefix="peers-", dir=str(HERE.parent)) as tmp:
        work = Path(tmp)
        np.savez(work / "calib.npz", x=xc, y=yc)
        np.savez(work / "train.npz", x=xt, y=yt)
        timer = Timer(original, shape, work)
        for s in speedups:
            options = dict(target="host", arch=arch, arch_kwargs=kwargs or None,
                           calib=str(work / "calib.npz"), speedup=s, progress=False)
            if recovered:
                options["train_data"] = str(work / "train.npz")
            out = work / f"ours-{s}"
            t0 = time.time()
            compress(str(weights), out=str(out), **{k: v for k, v in options.items() if v is not None})
            ours = load_pruned(out / "model.pruned.pt")
            ours_ratio = timer.ratio(ours)
            rows = [dict(arm="ours", latency=ours_ratio, top1=top1(ours, *test), macs=macs(ours, shape),
                         seconds=round(time.time() - t0))]
            for imp in importances:
                for mode in modes:
                    t0 = time.time()
                    r, pruned, got = match_latency(original, imp, mode == "global", ours_ratio, calib, timer)
                    if recovered:
                        recover(pruned, None, train, RecoveryOptions(), progress=False)
                    rows.append(dict(arm=f"tp-{imp}-{mode}", ratio=round(r, 4), latency=got,
                                     matched=abs(got / ours_ratio - 1) <= MATCH, top1=top1(pruned, *test),
                                     macs=macs(pruned, shape), seconds=round(time.time() - t0)))
            with out_file.open("a") as f:
                for row in rows:
                    row.update(family=name, speedup=s, recovered=recovered, base_top1=base, base_macs=macs(original, shape),
                               when=time.strftime("%Y-%m-%d %H:%M"))
                    f.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)


def table(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = []
    for fam in dict.fromkeys(r["family"] for r in rows):
        mine = [r for r in rows if r["family"] == fam]
        out.append(f"\n**{fam}** (original top-1 {mine[0]['base_top1']:.2%} on 2000 test images, "
                   f"{mine[0]['base_macs'] / 1e6:.1f} M MACs)\n")
        out.append("| speed-up asked | recovered | arm | top-1 | latency (x original, measured) | MACs |")
        out.append("|---|---|---|---|---|---|")
        for r in mine:
            note = "" if r.get("matched", True) else " (could not reach ours)"
            out.append(f"| {r['speedup']} | {'yes' if r['recovered'] else 'no'} | {r['arm']} | {r['top1']:.2%} | "
                       f"{r['latency']:.3f}{note} | {r['macs'] / 1e6:.1f} M |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    r.add_argument("--speedups", nargs="+", type=float, default=[1.3, 1.5, 2.0])
    r.add_argument("--importances", nargs="+", default=list(IMPORTANCES), choices=list(IMPORTANCES))
    r.add_argument("--modes", nargs="+", default=["uniform", "global"], choices=["uniform", "global"])
    r.add_argument("--recover", action="store_true", help="the recovered arms (one epoch on 5000 labelled images)")
    r.add_argument("--out", type=Path, default=RESULTS)
    t = sub.add_parser("table")
    t.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args()
    if args.cmd == "table":
        print(table(args.results))
        return
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch.onnx")   # the exporter's constant-folding notes
    for fam in args.families:
        run_family(fam, args.speedups, args.recover, args.importances, args.modes, args.out)


if __name__ == "__main__":
    main()
