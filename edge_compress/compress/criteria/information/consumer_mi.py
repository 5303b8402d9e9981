"""`consumer-mi`: greedy removal keeping the most Gaussian MI between each consumer layer's output with and
without the channels (compress/metrics/consumer_mi.py), each output channel weighted by its share of the
residual sum it joins (compress/metrics/residual_share.py). Unsupervised: calibration images, no labels."""
from __future__ import annotations

import logging

import torch
from pydantic import Field

from ...metrics import consumer_mi, residual_share
from ...metrics.memory import release_free_memory
from ..registry import register_criterion
from .common import InformationCriterion, InformationOptions, l1_scores

log = logging.getLogger("compress")


class ConsumerMiOptions(InformationOptions):
    samples: int = Field(512, ge=16, description="sampled positions (image, location) per consumer")
    batch_size: int = Field(64, ge=1, description="calibration images per forward pass")
    seed: int = 0
    residual: bool = Field(True, description="weight each consumer output channel that feeds a residual addition by "
                                             "its share of the sum, var(branch) / var(sum)")
    # 0.5 measured better than 0 one-shot and after recovery (BENCHMARKS.md, consumer-mi).
    tie: float = Field(0.5, ge=0, allow_inf_nan=False,
                       description="magnitude breaks near-ties: each greedy step removes, among the channels whose "
                                   "loss increment is at most min + tie x (median - min), the one with the least L1 "
                                   "over its group (0: the least loss)")


class ConsumerMiCriterion(InformationCriterion):
    """Greedy removal that keeps the most Gaussian MI between each consumer's output with and without
    the channels (compress/metrics/consumer_mi.py). Unsupervised: calibration images, no labels."""

    name = "consumer-mi"
    needs_labels = False

    def compute(self, view, groups, x, y):
        model = view.model
        modules = dict(model.named_modules())
        reads = view.readers()
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
        tp_groups = view.root_groups_by_name()
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
                magnitude = l1_scores(tp_groups[g.root]).to(self.opts.device, torch.float64) if self.opts.tie > 0 else None
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
                out[g.root] = l1_scores(tp_groups[g.root]).to(torch.float64)
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


register_criterion("consumer-mi", "greedy removal keeping the most Gaussian mutual information between each consumer "
                   "layer's output with and without the channels (what BatchNorm re-estimation cannot restore), each "
                   "output channel weighted by its share of the residual sum it joins", ConsumerMiOptions)(ConsumerMiCriterion)
