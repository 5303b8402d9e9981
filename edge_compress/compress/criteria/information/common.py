"""The information methods as pruning criteria: `cmi`, `mipp`, `mi-gradient`, `capacity-independence`.

Each scores the channels of every prunable coupled group from calibration data, once (or before every
round with rescore=true), in the original channel numbering; the pruner's record of which original
channels survive (GroupInfo.kept) maps the scores onto the current model.

Coupled groups: a group's channel c is the same index in every layer that produces it (the convs
summed into a residual stream, a conv and the depthwise conv after it). Its feature is the
concatenation of those layers' channel-c features, so distance-based methods (CMI, MIPP) see one
variable per coupled channel; score-based methods (MI gradient, capacity-independence) average the
per-layer scores after normalising each layer by its mean.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any, Callable

import torch
import torch_pruning as tp

from .criteria import Criterion, mean_normalised, register_criterion
from .errors import CalibrationError, InputError
from .info import capacity as cap
from .info import consumer_mi, residual_share
from .info_allocation import output_information_scales
from .info.cmi import CmiConfig, layer_distances, rank_layers
from .info.features import collect_features, layer_chunks
from .info.memory import release_free_memory
from .info.mi_gradient import mi_gradient_scores
from .info.mipp import mipp_select
from .info.renyi import LABEL_KERNELS, channel_sq_distances, gram_from_sq_dist, label_gram, median_sigma, paper_sigma

log = logging.getLogger("compress")

WEIGHTS = ("none", "l1")
ALLOCATIONS = ("none", "kl")


# -- options --------------------------------------------------------------------------------------

def _parse_value(kind, text: Any, key: str):
    if not isinstance(text, str):
        return kind(text)
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return kind(text)
    except ValueError:
        raise InputError(f"--criterion-option {key}={text}: expected a {kind.__name__}") from None


def _options(cls, name: str, given: dict):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise InputError(f"criterion {name!r} has no option {unknown[0]!r}; its options: {', '.join(sorted(known))}")
    kinds = {"float": float, "int": int, "bool": bool, "str": str}
    values = {k: _parse_value(kinds[str(known[k].type)], v, k) for k, v in given.items()}
    try:
        return cls(**values)
    except ValueError as e:
        raise InputError(f"criterion {name!r}: {e}") from None


@dataclass
class _Common:
    min_samples: int = 32   # fewer calibration samples than this is an error, not a noisy score
    rescore: bool = False   # recompute the scores before every pruning round (iterative) instead of once
    labels: str = "delta"   # label kernel: delta (exact for classes) or onehot (Gaussian, the CMI paper's code)
    device: str = "cpu"     # where the metrics run (cpu or cuda); the model's forward passes stay where it is
    # Information-weighted magnitude: multiply each channel's information score by its L1 norm over the
    # coupled group (both divided by their layer mean). "none" ranks by information alone.
    weight: str = "none"
    # Across layers (knapsack): "kl" scales each group by the output information its weakest channels
    # carry, measured before every round (compress/info_allocation.py); "none" lets cost decide.
    allocation: str = "none"
    # With weight=l1: score = magnitude x information ** power (each divided by its layer mean). Below 1
    # the information term only re-orders channels of similar magnitude.
    power: float = 1.0
    # How many channels each layer keeps: "own" lets the knapsack read this criterion's scores; "l1"
    # hands it the layer's L1 scores re-assigned in this criterion's order, so magnitude sets each
    # layer's width (as the l1 criterion would) and information picks which channels fill it.
    widths: str = "own"

    def _check_weight(self) -> None:
        if self.weight not in WEIGHTS:
            raise ValueError(f"unknown weight {self.weight!r}; choose one of {', '.join(WEIGHTS)}")

    def __post_init__(self):
        if not self.power > 0:
            raise ValueError(f"power must be positive (got {self.power})")
        self._check_weight()
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"unknown allocation {self.allocation!r}; choose one of {', '.join(ALLOCATIONS)}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} was asked for but no CUDA device is visible; use device=cpu")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"unknown device {self.device!r}; use cpu or cuda")
        if self.labels not in LABEL_KERNELS:
            raise ValueError(f"unknown label kernel {self.labels!r}; choose one of {', '.join(LABEL_KERNELS)}")
        if self.min_samples < 4:
            raise ValueError("min_samples must be at least 4")
        if self.widths not in ("own", "l1"):
            raise ValueError(f"unknown widths {self.widths!r}; choose own or l1")


def in_order_of(order: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """`values` re-assigned so that they rank like `order`: the k-th lowest of `order` gets the k-th
    lowest value. The set of values (what the knapsack weighs layers by) is unchanged."""
    out = torch.empty_like(values, dtype=torch.float64)
    out[torch.argsort(order.to(torch.float64), stable=True)] = torch.sort(values.to(torch.float64)).values
    return out


# -- the shared machinery -------------------------------------------------------------------------

class InformationCriterion(Criterion):
    needs_data = True
    needs_labels = True

    def __init__(self, opts):
        self.opts = opts
        self._scores: dict[str, torch.Tensor] = {}   # root -> scores over the ORIGINAL channels
        self._alloc: dict[str, float] | None = None
        self._details: dict = {}
        self._scales: dict[str, float] | None = None
        self._alloc_details: dict = {}
        self.progress: Callable[[str, int, int], None] | None = None  # (stage, done, total)

    def prepare(self, pruner, x, y) -> None:
        if not self._scores or self.opts.rescore:
            self._score(pruner, x, y)
        if self.opts.allocation == "kl":   # every round: the scale depends on what is left of each layer
            self._scales, self._alloc_details = output_information_scales(pruner, self, x)

    def group_scales(self):
        return self._scales

    def prepare_reads_model(self) -> bool:
        # scored once unless rescore; allocation=kl measures the current model before every round; a
        # subclass with its own prepare is assumed to read the model
        if type(self).prepare is not InformationCriterion.prepare:
            return True
        return bool(self.opts.rescore) or self.opts.allocation == "kl"

    def _score(self, pruner, x, y) -> None:
        if self.needs_data:
            self._check_data(x, y)
        groups = [g for g in pruner.prunable_groups]
        order = {n: i for i, n in enumerate(pruner.execution_order())}
        groups.sort(key=lambda g: order.get(g.root, len(order)))
        current = self.compute(pruner, groups, x, y)
        for g in groups:
            s = current[g.root].detach().to(torch.float64).cpu()
            if s.numel() != g.channels or not torch.isfinite(s).all():
                raise CalibrationError(f"{self.name}: no usable scores for {g.root} (NaN, or {s.numel()} for "
                                       f"{g.channels} channels); check the calibration data")
            full = torch.full((g.original_channels,), float("-inf"), dtype=torch.float64)
            full[g.kept] = s
            self._scores[g.root] = full

    def _check_data(self, x, y) -> None:
        if x is None or len(x) < self.opts.min_samples:
            raise CalibrationError(f"criterion {self.name!r} needs at least {self.opts.min_samples} calibration samples "
                                   f"(got {0 if x is None else len(x)}); pass more with --calib / --calib-samples, or "
                                   "lower --criterion-option min_samples")
        if not torch.isfinite(x).all():
            raise CalibrationError("the calibration data contains NaN or inf values; clean it before pruning")
        if self.needs_labels:
            if y is None:
                raise CalibrationError(f"criterion {self.name!r} needs labels or the model's predictions; pass --calib")
            if len(torch.unique(y)) < 2:
                raise CalibrationError(f"the calibration labels have a single class, so no channel carries information "
                                       f"about them and {self.name!r} cannot rank channels; use data with several classes")

    def compute(self, pruner, groups, x, y) -> dict[str, torch.Tensor]:
        """Scores for the CURRENT channels of each group, keyed by root."""
        raise NotImplementedError

    def scores(self, pruner, info, group) -> torch.Tensor:
        if info.root not in self._scores:
            raise CalibrationError(f"{self.name}: {info.root} was not scored; the criterion was not prepared with data")
        s = self._scores[info.root][info.kept]
        l1 = _L1(group) if self.opts.weight != "none" or self.opts.widths == "l1" else None
        if self.opts.weight != "none":
            # Magnitude says how much a channel contributes, information how much of that is worth keeping
            # (BENCHMARKS.md, "Information criteria study"): each term normalised by its layer mean, so the
            # product has the same scale in every layer.
            s = mean_normalised(l1) * mean_normalised(s) ** self.opts.power
        if self.opts.widths == "l1":
            s = in_order_of(s, l1)
        return s.to(torch.float32)

    def allocation(self):
        return self._alloc

    def details(self) -> dict:
        out = {"options": vars(self.opts), "layers": self._details}
        if self._alloc_details:
            out["allocation"] = self._alloc_details   # the last round's scales
        return out

    # helpers for subclasses

    def _tick(self, stage: str, done: int, total: int) -> None:
        if self.progress:
            self.progress(stage, done, total)

    def _features(self, pruner, groups, x, pooled: bool = False) -> dict[str, torch.Tensor]:
        """Per group: (N, C_root, D) features, each coupled channel's maps from every producer concatenated
        (`pooled`: each map averaged over its positions, one number per producer)."""
        producers = {g.root: pruner.producers(g.root) for g in groups}
        names = sorted({p for prods in producers.values() for p, _, _ in prods})
        feats = collect_features(pruner.model, x, names)
        out = {}
        for g in groups:
            parts = []
            for layer, idxs, root_idxs in producers[g.root]:
                f = feats[layer].tensor
                flat = f.reshape(f.shape[0], f.shape[1], -1)
                mapped = flat.new_zeros(flat.shape[0], g.channels, flat.shape[2])
                mapped[:, root_idxs] = flat[:, idxs]
                parts.append(mapped.mean(2, keepdim=True) if pooled else mapped)
            out[g.root] = torch.cat(parts, 2).to(self.opts.device)
        return out

    def _label_gram(self, y: torch.Tensor) -> torch.Tensor:
        return label_gram(y, self.opts.labels, num_classes=int(y.max()) + 1)


_L1 = tp.importance.GroupMagnitudeImportance(p=1)


def _normalised(v: torch.Tensor) -> torch.Tensor:
    m = v.abs().mean()
    return v / m if m > 0 else v


def _merge_producers(pruner, g, per_layer: dict[str, torch.Tensor]) -> torch.Tensor:
    total = torch.zeros(g.channels, dtype=torch.float64)
    count = torch.zeros(g.channels, dtype=torch.float64)
    for layer, idxs, root_idxs in pruner.producers(g.root):
        v = _normalised(per_layer[layer].to(torch.float64))
        total[root_idxs] += v[idxs]
        count[root_idxs] += 1
    return total / count.clamp_min(1)


# -- CMI ------------------------------------------------------------------------------------------

@dataclass
class CmiOptions(_Common, CmiConfig):
    """The method's own settings (CmiConfig, validated there) plus the pipeline's."""

    allocate: bool = True   # let the cutoffs set each layer's share (the budget still decides the total)
    weight: str = "l1"      # measured better than information alone (BENCHMARKS.md, "Information criteria study")
    # The best CMI configuration measured (ResNet-20 at 50 % MACs, BENCHMARKS.md): the paper's kernel width
    # and the square root of the information term, 54.1 % against 52.0 % with median width and power 1.
    width: str = "paper"
    power: float = 0.5
    features: str = "full"  # full (every position of the map) or pooled (the map's mean: one number per sample)

    def __post_init__(self):
        _Common.__post_init__(self)
        CmiConfig.__post_init__(self)
        if self.features not in ("full", "pooled"):
            raise ValueError(f"unknown features {self.features!r}; choose full or pooled")

    def config(self) -> CmiConfig:
        return CmiConfig(**{f.name: getattr(self, f.name) for f in fields(CmiConfig)})


class CmiCriterion(InformationCriterion):
    name = "cmi"

    def compute(self, pruner, groups, x, y):
        feats = self._features(pruner, groups, x, pooled=self.opts.features == "pooled")
        ky = self._label_gram(y.to(self.opts.device))
        done = []

        def distances(root):
            return layer_distances(feats[root], self.opts.width)

        def tick(root):
            done.append(root)
            self._tick("cmi", len(done), len(groups))

        results = rank_layers([g.root for g in groups], distances, ky, self.opts.config(), tick)
        self._details = {r: res.to_dict() for r, res in results.items()}
        if self.opts.allocate and self.opts.cutoff != "none":
            self._alloc = {r: res.keep / res.channels for r, res in results.items()}
        return {r: res.scores() for r, res in results.items()}


# -- MIPP -----------------------------------------------------------------------------------------

@dataclass
class MippOptions(_Common):
    alpha: float = 2.0
    width: str = "median"      # median (of the whole layer's summed distances) or paper
    confidence: float = 0.95
    n_boot: int = 20
    allocate: bool = True
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.width not in ("median", "paper"):
            raise ValueError(f"MIPP kernel width must be 'median' or 'paper', got {self.width!r}")


class MippCriterion(InformationCriterion):
    """Back to front: each layer keeps what preserves its MI with the already-pruned next layer."""

    name = "mipp"
    needs_labels = False

    def compute(self, pruner, groups, x, y):
        feats = self._features(pruner, groups, x)
        layers = pruner.execution_order()
        owner = {p: g for g in groups for p, _, _ in pruner.producers(g.root)}
        targets = {g.root: self._next_layer(pruner, layers, g) for g in groups}
        extra = sorted({t for t in targets.values() if t is not None and t not in owner})
        target_feats = {n: f.tensor for n, f in collect_features(pruner.model, x, extra).items()} if extra else {}
        out_feats = None
        kept: dict[str, list[int]] = {}
        results = {}
        for i, g in enumerate(reversed(groups)):
            t = targets[g.root]
            if t is None:
                if out_feats is None:
                    out_feats = _model_output(pruner.model, x)
                target = out_feats
            elif t in owner:                     # the next layer belongs to a group already pruned
                h = owner[t]
                target = feats[h.root][:, kept.get(h.root, list(range(h.channels)))]
            else:
                target = target_feats[t]
            tg = _gram_of(target.to(self.opts.device), self.opts.width)
            d2 = channel_sq_distances(feats[g.root])
            total = d2.sum(0)
            sigma = median_sigma(total) if self.opts.width == "median" else \
                paper_sigma(x.shape[0], feats[g.root].shape[1] * feats[g.root].shape[2])
            res = mipp_select(d2, tg, sigma, alpha=self.opts.alpha, confidence=self.opts.confidence,
                              n_boot=self.opts.n_boot, seed=self.opts.seed, min_keep=1)
            kept[g.root] = res.keep
            results[g.root] = res
            self._details[g.root] = {**res.to_dict(), "target": t or "model output"}
            self._tick("mipp", i + 1, len(groups))
        if self.opts.allocate:
            channels = {g.root: g.channels for g in groups}
            self._alloc = {r: len(res.keep) / channels[r] for r, res in results.items()}
        return {r: res.scores for r, res in results.items()}

    @staticmethod
    def _next_layer(pruner, layers: list[str], g) -> str | None:
        mine = {p for p, _, _ in pruner.producers(g.root)}
        after = layers[layers.index(g.root) + 1:] if g.root in layers else []
        return next((n for n in after if n not in mine), None)


def _gram_of(features: torch.Tensor, width: str) -> torch.Tensor:
    flat = features.reshape(features.shape[0], -1).to(torch.float64)
    d2 = channel_sq_distances(flat.unsqueeze(1))[0].to(torch.float64)
    sigma = median_sigma(d2) if width == "median" else paper_sigma(flat.shape[0], flat.shape[1])
    return gram_from_sq_dist(d2, sigma)


def _model_output(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        outs = [model(x[i:i + 64]) for i in range(0, len(x), 64)]
    outs = [o[0] if isinstance(o, (tuple, list)) else o for o in outs]
    return torch.cat(outs).reshape(len(x), -1)


# -- MI preserved at the consumers ----------------------------------------------------------------

@dataclass
class ConsumerMiOptions(_Common):
    samples: int = 512       # sampled positions (image, location) per consumer
    batch_size: int = 64     # calibration images per forward pass
    seed: int = 0
    # weight each consumer output channel that feeds a residual addition by its share of the sum,
    # var(branch) / var(sum) (compress/info/residual_share.py)
    residual: bool = True
    # magnitude breaks near-ties: each greedy step removes, among the channels whose loss increment is at
    # most min + tie x (median - min), the one with the least L1 over its group (0: the least loss). 0.5
    # kept both more accuracy one-shot and more after recovery than 0 (BENCHMARKS.md, consumer-mi)
    tie: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        if self.samples < 16:
            raise ValueError("samples must be at least 16")
        if not self.tie >= 0:
            raise ValueError(f"tie must be a number >= 0, got {self.tie!r}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")


class ConsumerMiCriterion(InformationCriterion):
    """Greedy removal that keeps the most Gaussian MI between each consumer's output with and without
    the channels (compress/info/consumer_mi.py). Unsupervised: calibration images, no labels."""

    name = "consumer-mi"
    needs_labels = False

    def compute(self, pruner, groups, x, y):
        model = pruner.model
        modules = dict(model.named_modules())
        reads = pruner.consumer_map()
        usable, why = {}, {}
        for g in groups:
            dense = [(n, i, r) for n, i, r in reads.get(g.root, []) if n in modules and consumer_mi.dense(modules[n])]
            if dense:
                usable[g.root] = dense
            else:
                why[g.root] = ("no dense Conv2d or Linear layer reads these channels (only depthwise or other "
                               "layers, or none): ranked by L1 over the group instead")
        by_consumer: dict[str, list] = {}
        for g in groups:
            for n, idxs, root_idxs in usable.get(g.root, []):
                by_consumer.setdefault(n, []).append((g, torch.tensor(idxs), torch.tensor(root_idxs)))
        gen = torch.Generator().manual_seed(self.opts.seed)
        limit = {n: min(consumer_mi.outputs_per_consumer(g.channels, len(usable[g.root])) for g, _, _ in gs)
                 for n, gs in by_consumer.items()}
        outputs = {n: consumer_mi.output_subset(modules[n], gen, limit[n]) for n in sorted(by_consumer)}
        # The pass keeps only the sampled input patches of each reader, per batch, in the activations' own
        # precision; each group's (M, O, C) float64 contributions are expanded from them when the group is
        # ranked (consumer_mi.GroupContributions), so one group's are held at a time, not every group's.
        patches: dict[str, list[torch.Tensor]] = {n: [] for n in by_consumer}
        release_free_memory(collect=True)   # what earlier stages left, before the pass and the covariances

        def capture(name, module, inputs, samples):   # gather at once, so no layer's input is kept for long
            patches[name].append(consumer_mi.gather_patches(module, inputs, samples, gen).cpu())

        shares, untraced = self._reader_pass(model, set(by_consumer), capture, x)
        release_free_memory()   # the pass's activations
        if untraced:
            log.warning("consumer-mi: %s; output channels weighted equally (criterion option residual=false "
                        "silences this)", untraced)
        tp_groups = pruner.root_groups_by_name()
        out = {}
        for g in groups:   # a reader that did not run, or ran more than once per pass, cannot be paired up
            rows = {sum(len(t) for t in patches[n]) for n, _, _ in usable.get(g.root, [])}
            if g.root in usable and (len(rows) != 1 or 0 in rows):
                del usable[g.root]
                why[g.root] = ("a layer reading these channels did not run, or ran more than once, in the forward "
                               "pass: ranked by L1 over the group instead")
        left = {n: sum(1 for g in groups if any(m == n for m, _, _ in usable.get(g.root, []))) for n in by_consumer}
        for k, g in enumerate(groups):
            if g.root in usable:
                names = [n for n, _, _ in usable[g.root]]
                readers = [(modules[n], patches[n], outputs[n], *next((i, r) for h, i, r in by_consumer[n] if h is g))
                           for n in names]
                source = consumer_mi.GroupContributions(readers, g.channels, self.opts.device)
                del readers
                weights = _output_weights(names, outputs, shares, modules)
                magnitude = _L1(tp_groups[g.root]).to(self.opts.device, torch.float64) if self.opts.tie > 0 else None
                # the default ranking builds the contributions a block of output channels at a time; a
                # subclass's own _rank gets the whole (M, O, C) tensor
                xs = source if type(self)._rank is ConsumerMiCriterion._rank else source.block(0, source.shape[1])
                out[g.root] = self._rank(source.z(), xs, [(n, outputs[n]) for n in names],
                                         None if weights is None else weights.to(self.opts.device), magnitude).cpu()
                del source, xs
                for n in names:   # a reader's patches are done with once every group it reads is ranked
                    left[n] -= 1
                    if not left[n]:
                        patches[n] = []
                release_free_memory()
                self._details[g.root] = {"consumers": names, "residual_weighted": sorted(set(names) & set(shares)),
                                         "scores": [round(float(v), 6) for v in out[g.root]]}
                if untraced:
                    self._details[g.root]["residual_untraced"] = untraced
            else:
                out[g.root] = _L1(tp_groups[g.root]).to(torch.float64)
                self._details[g.root] = {"why": why[g.root]}
            self._tick("consumer-mi", k + 1, len(groups))
        if why:
            log.warning("consumer-mi: %d group(s) have no dense Conv2d or Linear reader and were ranked by L1: %s",
                        len(why), ", ".join(sorted(why)))
        return out

    def _reader_pass(self, model, names: set, capture, x) -> tuple[dict, str | None]:
        """One pass over the calibration images `x`, in eval mode without gradients, calling
        capture(name, module, input, samples) before each reader in `names` runs, `samples` being that
        batch's share of opts.samples. The same pass measures the readers' residual shares (opts.residual).
        Returns the shares ({} without them) and why the model could not be traced (None if it was)."""
        modules = dict(model.named_modules())
        run = residual_share.BranchShares(model, names) if self.opts.residual and names else model
        per_batch = [0]
        handles = [modules[n].register_forward_pre_hook(
            lambda module, args, n=n: capture(n, module, args[0], per_batch[0])) for n in sorted(names)]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for i in range(0, len(x), self.opts.batch_size):
                    batch = x[i:i + self.opts.batch_size]
                    per_batch[0] = max(2, -(-self.opts.samples * len(batch) // len(x)))
                    run(batch)
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        return (run.shares() if run is not model else {}), getattr(run, "why", None)

    def _rank(self, z: torch.Tensor, xs: "torch.Tensor | consumer_mi.GroupContributions", consumers: list,
              weights: torch.Tensor | None, magnitude: torch.Tensor | None = None) -> torch.Tensor:
        """Scores from the consumers' outputs `z` and each channel's part `xs` (here a
        consumer_mi.GroupContributions; the (M, O, C) tensor for a subclass that overrides this);
        `consumers` lists the readers in column order with the output channels sampled from each (None:
        all); `weights` the residual share of each column of `z` (None: equal); `magnitude` the group's
        L1 (with tie > 0)."""
        return consumer_mi.greedy_removal_scores(z, xs, weights=weights, magnitude=magnitude, tie=self.opts.tie)


def _output_weights(names, outputs, shares, modules) -> torch.Tensor | None:
    """Per column of z: the output channel's residual share (1 where its consumer ends no residual
    branch); None when no consumer does."""
    if not any(n in shares for n in names):
        return None
    parts = []
    for n in names:
        share = shares.get(n)
        if share is None:
            share = torch.ones(modules[n].weight.shape[0], dtype=torch.float64)
        parts.append(share if outputs[n] is None else share[outputs[n]])
    return torch.cat(parts)


# -- MI gradient ----------------------------------------------------------------------------------

@dataclass
class MiGradientOptions(_Common):
    target: str = "output"
    alpha: float = 2.0
    width: str = "median"
    batch_size: int = 128

    def __post_init__(self):
        super().__post_init__()
        if self.target not in ("output", "layer"):
            raise ValueError(f"unknown MI-gradient target {self.target!r}; choose output or layer")
        if self.width not in ("median", "paper"):
            raise ValueError(f"MI-gradient kernel width must be 'median' or 'paper', got {self.width!r}")


class MiGradientCriterion(InformationCriterion):
    name = "mi-gradient"

    def compute(self, pruner, groups, x, y):
        names = sorted({p for g in groups for p, _, _ in pruner.producers(g.root)})
        seen = [0]

        def tick(n):
            seen[0] += n
            self._tick("mi-gradient", seen[0], len(x))

        per_layer = mi_gradient_scores(pruner.model, x, lambda idx: self._label_gram(y[idx]), names,
                                       target=self.opts.target, alpha=self.opts.alpha, width=self.opts.width,
                                       batch_size=self.opts.batch_size, progress=tick)
        out = {g.root: _merge_producers(pruner, g, per_layer) for g in groups}
        self._details = {r: {"scores": [round(float(v), 6) for v in s]} for r, s in out.items()}
        return out


# -- information capacity and independence ----------------------------------------------------------

@dataclass
class CapacityOptions(_Common):
    source: str = "activations"   # activations (data-driven) or weights (data-free)
    capacity: str = "gaussian"    # gaussian or histogram (activations only)
    balance: float = 1.0          # weight of independence against capacity
    max_samples: int = 256        # samples used for the nuclear-norm independence
    weight: str = "l1"            # information-weighted magnitude: the winning configuration (BENCHMARKS.md)
    power: float = 0.5            # L1 x information ** 0.5: kept the one-shot lead and the lead after recovery

    def __post_init__(self):
        super().__post_init__()
        if self.source not in ("activations", "weights"):
            raise ValueError(f"unknown source {self.source!r}; choose activations or weights")
        if self.capacity not in ("gaussian", "histogram"):
            raise ValueError(f"unknown capacity estimate {self.capacity!r}; choose gaussian or histogram")
        if self.balance < 0:
            raise ValueError("balance must be >= 0")


class CapacityCriterion(InformationCriterion):
    name = "capacity-independence"
    needs_labels = False

    @property
    def needs_data(self) -> bool:
        return self.opts.source == "activations"   # the weight-based variant is data-free

    def compute(self, pruner, groups, x, y):
        names = sorted({p for g in groups for p, _, _ in pruner.producers(g.root)})
        per_layer = {}
        if self.opts.source == "weights":
            modules = dict(pruner.model.named_modules())
            for n in names:
                w = modules[n].weight.detach()
                per_layer[n] = cap.capacity_independence(cap.capacity_from_weights(w), cap.independence_from_weights(w),
                                                         self.opts.balance)
        else:
            done = 0
            for chunk in layer_chunks(pruner.model, x, names):   # a share of the layers' features at a time
                feats = collect_features(pruner.model, x, chunk)
                for n in chunk:
                    f = feats.pop(n).tensor.to(self.opts.device)
                    per_layer[n] = cap.capacity_independence(
                        cap.capacity_from_activations(f, self.opts.capacity),
                        cap.independence_from_activations(f, self.opts.max_samples), self.opts.balance)
                    del f
                    done += 1
                    self._tick("capacity-independence", done, len(names))
                del feats
                release_free_memory()
        out = {g.root: _merge_producers(pruner, g, per_layer) for g in groups}
        self._details = {r: {"scores": [round(float(v), 6) for v in s]} for r, s in out.items()}
        return out


_OPTION_TYPES: dict[str, type] = {}


def criterion_option_defaults(name: str) -> dict:
    """The options of criterion `name` with their defaults ({} for the Torch-Pruning baselines)."""
    cls = _OPTION_TYPES.get(name)
    return {f.name: f.default for f in fields(cls)} if cls else {}


def _register(name: str, cls, opts_cls, description: str) -> None:
    _OPTION_TYPES[name] = opts_cls
    register_criterion(name, description)(lambda options: cls(_options(opts_cls, name, options)))


_register("cmi", CmiCriterion, CmiOptions,
          "conditional mutual information with the labels, greedy per layer, with cutoffs that set each layer's "
          "share (Vu-Van et al.)")
_register("mipp", MippCriterion, MippOptions,
          "mutual-information preserving pruning: back to front, keep what preserves the MI with the next layer "
          "(Westphal et al.)")
_register("mi-gradient", MiGradientCriterion, MiGradientOptions,
          "|activation x gradient of the MI between output and labels| (our reading of Lee et al., ICIP 2020)")
_register("capacity-independence", CapacityCriterion, CapacityOptions,
          "information capacity (entropy) plus independence (nuclear-norm contribution) (Tang et al.; CHIP)")
_register("consumer-mi", ConsumerMiCriterion, ConsumerMiOptions,
          "greedy removal keeping the most Gaussian mutual information between each consumer layer's output "
          "with and without the channels (what BatchNorm re-estimation cannot restore), each output channel "
          "weighted by its share of the residual sum it joins")
