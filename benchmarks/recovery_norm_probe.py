"""Probe: does equalising producer filter norms before recovery close the gap between the channels L1
keeps and those consumer-mi keeps?

Behind a BatchNorm a conv filter's scale does not change the function but sets its effective learning
rate (the step relative to the weight goes as 1 / |w|^2), and L1 keeps large filters while information
criteria keep some small ones. Each conv filter followed by a BatchNorm is rescaled to its layer's mean
norm (running statistics rescaled with it, so top-1 is unchanged) before the benchmark's recovery.

    .venv/bin/python benchmarks/recovery_norm_probe.py resnet56 0,1,2,3,4,5,6,7 "l1;consumer-mi:tie=0" \
        benchmarks/results/study-resnet56-lat-l1at50-consumer-residual.json > benchmarks/results/recovery-norm-probe.jsonl

Arguments: arch, seeds, configurations, an equal-latency study result (its per-seed budgets). One JSON
line per seed and configuration: one-shot top-1, top-1 after equalising (must be the same), top-1 after
the recovery. Compare with the same arms' recovered top-1 without equalising in the study result files.
"""
import sys, copy, json, torch
sys.path.insert(0, '.')
from benchmarks.info_study import _tensors, MODELS, prune_one, _top1
from edge_compress.compress.search.budget import Budget
from edge_compress.compress.model_io import load_model
from edge_compress.compress.config import RecoveryOptions
from edge_compress.compress.recovery import recover


def equalise(model):
    mods = list(model.modules())
    for m1, m2 in zip(mods, mods[1:]):
        if isinstance(m1, torch.nn.Conv2d) and isinstance(m2, torch.nn.BatchNorm2d) and m1.out_channels == m2.num_features and m1.bias is None:
            with torch.no_grad():
                norms = m1.weight.flatten(1).norm(dim=1)
                a = norms.mean() / norms.clamp_min(1e-12)
                m1.weight.mul_(a.view(-1, 1, 1, 1))
                m2.running_mean.mul_(a); m2.running_var.mul_(a * a)


def main():
    torch.set_num_threads(2)
    arch = sys.argv[1]; seeds = [int(s) for s in sys.argv[2].split(',')]; configs = sys.argv[3].split(';')
    refs = json.load(open(sys.argv[4]))['reference']
    orig = load_model(MODELS[arch], arch, {}, False).module.eval()
    test = _tensors(arch, 'test', 5000, 12345)

    for seed in seeds:
        for config in configs:
            torch.manual_seed(seed)
            d = _tensors(arch, 'train', 256, 1000 + seed)
            model, ev, ctx, _ = prune_one(config, (d.x, d.y), Budget(latency_ms=refs[str(seed)]['predicted_ms']), orig)
            before = _top1(model, test)
            equalise(model)
            after_eq = _top1(model, test)
            tr = _tensors(arch, 'train', 5000, 2000 + seed)
            recover(model, copy.deepcopy(orig), (tr.x, None), RecoveryOptions(seed=seed), progress=False)
            print(json.dumps({'seed': seed, 'config': config, 'one_shot': before, 'after_equalise': after_eq, 'recovered_equalised': _top1(model, test)}), flush=True)


if __name__ == "__main__":
    main()
