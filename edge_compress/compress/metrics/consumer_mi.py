"""How much of the information in the next layers' outputs survives when a layer's channels go.

A channel is worth what the layers that read it (its consumers) lose without it. For a consumer with
output channels o, the output is a sum of per-input-channel contributions, z_o = sum_j x_oj. Removing
a set T of the group's channels leaves z_o(S) = z_o - sum_{j in T} x_oj. Modelled as jointly Gaussian,
the full and the pruned output share the mutual information

    I_o(S) = -1/2 log(1 - rho_o(S)^2),   rho_o(S) = corr(z_o, z_o(S)),

and the loss of a removal is sum_o exp(-2 I_o(S)) = sum_o (1 - rho_o(S)^2): the share of each output
channel's variance the kept channels cannot carry. This is also what BatchNorm re-estimation after the
consumer cannot restore: it gives every output channel back its mean and variance, not its correlation
with the original. (Summing I_o itself weighs already near-perfect output channels as much as badly
damaged ones, and measured worse one-shot: BENCHMARKS.md, consumer-mi.)

Where a consumer's output (after its BatchNorm) is added to a shortcut, what the network keeps is the
sum, and the loss of output channel o is weighted by the branch's share of that sum's variance
(compress/metrics/residual_share.py): the criterion's option `residual`, on by default.

Channels are removed greedily, the one whose removal (together with those already removed) loses least
first; a channel's score is the loss when it went, so a higher score means keep. Correlations come
from second moments of the contributions at sampled positions of the calibration images, so each greedy
step costs O(outputs x channels) on a precomputed (outputs, channels, channels) covariance.

Pure tensor functions, float64, CPU or CUDA.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# Output channels per consumer kept in the covariance; a random subset above this (the loss is a sum
# over output channels, so a subset estimates it).
MAX_OUTPUTS = 64
# float64 elements of one group's (outputs, channels, channels) covariance (256 MB): wide groups (a
# 2048-channel residual stream read by several layers) keep fewer output channels per consumer.
MAX_COV_ELEMENTS = 1 << 25
# float64 elements of the contributions CorrelationLoss centres and reduces at once when it builds them a
# block of output channels at a time (GroupContributions): 32 MB.
BLOCK_ELEMENTS = 1 << 22


def outputs_per_consumer(channels: int, consumers: int) -> int:
    """How many output channels each of a group's `consumers` may keep within MAX_COV_ELEMENTS."""
    return max(2, min(MAX_OUTPUTS, MAX_COV_ELEMENTS // (channels * channels * max(1, consumers))))


def output_subset(consumer: nn.Module, generator: torch.Generator, limit: int = MAX_OUTPUTS) -> torch.Tensor | None:
    """The output channels kept for `consumer` (None: all); drawn once, used for every batch."""
    out = consumer.weight.shape[0]
    return torch.randperm(out, generator=generator)[:limit].sort().values if out > limit else None


def dense(consumer: nn.Module) -> bool:
    """Whether every output of `consumer` mixes all its input channels (so contributions add up)."""
    return isinstance(consumer, nn.Linear) or (isinstance(consumer, nn.Conv2d) and consumer.groups == 1)


def contributions(consumer: nn.Module, inputs: torch.Tensor, samples: int, generator: torch.Generator,
                  outputs: torch.Tensor | None = None) -> torch.Tensor:
    """(M, O, C_in): each input channel's contribution to each output channel of `consumer` (those in
    `outputs`, default all) at M = `samples` positions (image, location) of `inputs`, the consumer's
    input activations, drawn with `generator` (image first, then location; a Linear layer has one
    position per row of its last dimension: per image after a flatten, per pixel on channels-last maps). Only the sampled patches are gathered and cast to float64, so memory does not
    grow with the image size."""
    return contributions_from_patches(consumer, gather_patches(consumer, inputs, samples, generator), outputs)


def contributions_from_patches(consumer: nn.Module, patches: torch.Tensor,
                               outputs: torch.Tensor | None = None) -> torch.Tensor:
    """`contributions` from patches `gather_patches` took (the same numbers, computed later): a caller
    that keeps the patches of a pass, (M, C_in, K) in the activations' own precision, holds far less
    than the (M, O, C_in) float64 contributions they expand to."""
    w = consumer.weight.detach().to(torch.float64)
    if outputs is not None:
        w = w[outputs.to(w.device)]
    patches = patches.to(device=w.device, dtype=torch.float64)
    return torch.einsum("mck,ock->moc", patches, w.reshape(w.shape[0], patches.shape[1], patches.shape[2]))


def sampled_patches(consumer: nn.Module, inputs: torch.Tensor, samples: int, generator: torch.Generator) -> torch.Tensor:
    """(M, C_in, K) float64: the input patches `consumer` reads at M = `samples` positions of `inputs`,
    drawn as `contributions` draws them (K = kernel taps; 1 for a Linear layer)."""
    return gather_patches(consumer, inputs, samples, generator).to(torch.float64)


def gather_patches(consumer: nn.Module, inputs: torch.Tensor, samples: int, generator: torch.Generator) -> torch.Tensor:
    """`sampled_patches` in the dtype of `inputs` (casting to float64 later gives the same numbers).
    With zero padding only the sampled patches are read (positions in the padding read 0); other padding
    modes pad the images drawn."""
    if not dense(consumer):
        raise ValueError(f"consumer-mi reads a dense Conv2d or Linear consumer only, got {consumer}")
    x = inputs.detach()
    if isinstance(consumer, nn.Linear):   # on the last dim: every leading index (e.g. ConvNeXt's pixels) is a position
        x = x.reshape(-1, consumer.in_features)
        rows = torch.randint(len(x), (samples,), generator=generator).to(x.device)
        return x[rows][:, :, None]
    pads = _pads(consumer)   # (left, right, top, bottom)
    height, width = x.shape[2] + pads[2] + pads[3], x.shape[3] + pads[0] + pads[1]
    (kh, kw), (sh, sw), (dh, dw) = consumer.kernel_size, consumer.stride, consumer.dilation
    out_h = (height - dh * (kh - 1) - 1) // sh + 1
    out_w = (width - dw * (kw - 1) - 1) // sw + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"input {tuple(inputs.shape)} is smaller than the kernel of {consumer}")
    ni = torch.randint(len(x), (samples,), generator=generator).to(x.device)
    li = torch.randint(out_h * out_w, (samples,), generator=generator).to(x.device)
    rows = (li // out_w * sh)[:, None] + torch.arange(kh, device=x.device)[None] * dh     # M, kh (padded)
    cols = (li % out_w * sw)[:, None] + torch.arange(kw, device=x.device)[None] * dw      # M, kw (padded)
    if any(pads) and consumer.padding_mode != "zeros":
        uniq, ni = torch.unique(ni, return_inverse=True)   # pad only the images drawn
        x = _padded(consumer, x[uniq])
    elif any(pads):
        rows, cols = rows - pads[2], cols - pads[0]
        inside = (((rows >= 0) & (rows < x.shape[2]))[:, :, None] & ((cols >= 0) & (cols < x.shape[3]))[:, None, :])
        patches = x[ni[:, None, None], :, rows.clamp(0, x.shape[2] - 1)[:, :, None],
                    cols.clamp(0, x.shape[3] - 1)[:, None, :]]                          # M, kh, kw, C
        patches = patches.masked_fill_(~inside[:, :, :, None], 0)
        return patches.permute(0, 3, 1, 2).reshape(samples, x.shape[1], kh * kw)
    # advanced indices around a slice: the indexed dims come first -> (M, kh, kw, C)
    patches = x[ni[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return patches.permute(0, 3, 1, 2).reshape(samples, x.shape[1], kh * kw)


def _pads(conv: nn.Conv2d) -> list[int]:
    """The padding `conv` applies as F.pad's list (left, right, top, bottom): numeric or 'same'/'valid'."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return [0, 0, 0, 0]
        pads = []   # 'same' (stride 1): the total d*(k-1), the extra one at the end, as PyTorch does
        for k, d in zip(reversed(conv.kernel_size), reversed(conv.dilation)):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return pads
    return [p for p in reversed(conv.padding) for _ in range(2)]


def _padded(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`x` padded the way `conv` pads it: numeric or 'same'/'valid' padding, any padding_mode."""
    pads = _pads(conv)
    if not any(pads):
        return x
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    return F.pad(x, pads, mode=mode)


def information_lost(rho: torch.Tensor) -> torch.Tensor:
    """exp(-2 I) = 1 - rho^2 per output, I the Gaussian MI between the full and the pruned output."""
    return 1 - rho.clamp(0, 1) ** 2


class GroupContributions:
    """A group's x (M, O, C) for CorrelationLoss, built on demand from the patches a pass kept: the readers'
    output columns side by side, the batches one under the other, each batch's contributions computed
    as contributions() computes them and summed into the group's channels (`root_idxs`) with index_add,
    so a block of output columns is the same numbers as those columns of the whole x.

    `readers`: per reader (the consumer module, its patches per batch, its output subset or None, its
    input channel idxs, the group's channel for each of them)."""

    def __init__(self, readers: list, channels: int, device: torch.device | str = "cpu"):
        self.readers, self.channels, self.device = readers, channels, torch.device(device)
        self.widths = [len(outs) if outs is not None else module.weight.shape[0]
                       for module, _, outs, _, _ in readers]
        rows = {sum(len(p) for p in patches) for _, patches, _, _, _ in readers}
        if len(rows) != 1:
            raise ValueError(f"the readers of a group have different numbers of sampled positions: {sorted(rows)}")
        self.shape = (rows.pop(), sum(self.widths), channels)

    def z(self) -> torch.Tensor:
        """(M, O): the readers' outputs (without bias) at the sampled positions."""
        z = torch.empty(self.shape[:2], dtype=torch.float64)
        col = 0
        for (module, patches, outs, _, _), width in zip(self.readers, self.widths):
            row = 0
            for p in patches:
                contrib = contributions_from_patches(module, p, outs)
                z[row:row + len(contrib), col:col + width] = contrib.sum(2).cpu()
                row += len(contrib)
            col += width
        return z.to(self.device)

    def block(self, a: int, b: int) -> torch.Tensor:
        """(M, b - a, C): output columns a to b of x, a fresh tensor."""
        m, _, c = self.shape
        out = torch.zeros(m, b - a, c, dtype=torch.float64)
        col = 0
        for (module, patches, outs, idxs, root_idxs), width in zip(self.readers, self.widths):
            lo, hi = max(a, col), min(b, col + width)
            if lo < hi:
                # only the block's output columns are expanded: a reader read block by block costs one
                # expansion of its contributions in all, not one per block
                cols = outs[lo - col:hi - col] if outs is not None else torch.arange(lo - col, hi - col)
                row = 0
                for p in patches:
                    contrib = contributions_from_patches(module, p, cols)
                    rows = len(contrib)
                    if contrib.device.type == "cpu":   # summed straight into place (duplicates in the order given)
                        out[row:row + rows, lo - a:hi - a].index_add_(2, root_idxs, contrib[:, :, idxs])
                    else:
                        dev = contrib.device
                        part = contrib.new_zeros(rows, hi - lo, c)
                        part.index_add_(2, root_idxs.to(dev), contrib[:, :, idxs.to(dev)])
                        out[row:row + rows, lo - a:hi - a] = part.cpu()
                    row += rows
                    del contrib
            col += width
        return out.to(self.device)


class CorrelationLoss:
    """The loss sum_o weights_o x loss(rho_o) of removing each candidate channel on top of those removed
    so far, kept up to date one removal at a time: O(outputs x channels) per step on a precomputed
    (outputs, channels, channels) covariance. `z` (M, O) are the consumers' outputs (without bias) at M
    positions, `x` (M, O, C) the part of them each candidate channel contributes (the rest of z comes
    from channels that stay). `x` may be a GroupContributions instead of the tensor: the same numbers,
    without the whole (M, O, C) float64 tensor, the largest one scoring holds, next to the covariance."""

    def __init__(self, z: torch.Tensor, x, loss=information_lost, weights: torch.Tensor | None = None):
        if isinstance(x, GroupContributions):
            self._init_in_blocks(z, x, loss, weights)
            return
        if x.dim() != 3 or z.shape != x.shape[:2] or x.shape[0] < 2:
            raise ValueError(f"need z (M, O) and x (M >= 2, O, C), got {tuple(z.shape)} and {tuple(x.shape)}")
        if not (bool(torch.isfinite(x).all()) and bool(torch.isfinite(z).all())):
            raise ValueError("contributions contain NaN or inf values: check the calibration data")
        z = z - z.mean(0, keepdim=True)
        x = x - x.mean(0, keepdim=True)
        m, _, c = x.shape
        var_z = (z * z).mean(0)
        live = var_z > 0                                          # a constant output channel carries nothing
        if not bool(live.all()):
            z, x, var_z = z[:, live], x[:, live], var_z[live]
        self.var_z = var_z
        self.loss = loss
        self.w = weights[live].to(x)[:, None] if weights is not None else 1.0
        self.cov = torch.einsum("moi,moj->oij", x, x).div_(m)   # O, C, C: cov(x_oi, x_oj)
        self.cov_zx = torch.einsum("mo,moj->oj", z, x) / m       # O, C: cov(z_o, x_oj)
        del x
        self._start(c)

    def _init_in_blocks(self, z: torch.Tensor, source: "GroupContributions", loss, weights) -> None:
        """The same numbers as from the whole (M, O, C) x, without the whole x next to the covariance: x is
        built a block of output channels at a time (a column's mean over M is its own), each block checked,
        centred and reduced to its rows of the covariances before the next."""
        m, o, c = source.shape
        if z.shape != (m, o) or m < 2:
            raise ValueError(f"need z (M, O) and x (M >= 2, O, C), got {tuple(z.shape)} and {(m, o, c)}")
        if not bool(torch.isfinite(z).all()):
            raise ValueError("contributions contain NaN or inf values: check the calibration data")
        z = z - z.mean(0, keepdim=True)
        var_z = (z * z).mean(0)
        live = var_z > 0                                          # a constant output channel carries nothing
        if not bool(live.all()):
            z, var_z = z[:, live], var_z[live]
        self.var_z = var_z
        self.loss = loss
        self.w = weights[live].to(z)[:, None] if weights is not None else 1.0
        self.cov = z.new_empty(len(var_z), c, c)
        self.cov_zx = z.new_empty(len(var_z), c)
        at = 0
        step = max(1, BLOCK_ELEMENTS // max(1, m * c))
        for a in range(0, o, step):
            b = min(o, a + step)
            xb = source.block(a, b)
            if not bool(torch.isfinite(xb).all()):
                raise ValueError("contributions contain NaN or inf values: check the calibration data")
            xb.sub_(xb.mean(0, keepdim=True))
            keep = live[a:b]
            if not bool(keep.all()):
                xb = xb[:, keep]
            n = xb.shape[1]
            if n:
                self.cov[at:at + n] = torch.einsum("moi,moj->oij", xb, xb).div_(m)
                self.cov_zx[at:at + n] = torch.einsum("mo,moj->oj", z[:, at:at + n].contiguous(), xb) / m
            at += n
            del xb
        self._start(c)

    def _start(self, c: int) -> None:
        self.var_x = torch.diagonal(self.cov, dim1=1, dim2=2)    # O, C
        o = self.cov.shape[0]
        self.cov_z_removed = self.cov_zx.new_zeros(o)            # cov(z_o, e_o), e_o the removed part
        self.var_removed = self.cov_zx.new_zeros(o)              # var e_o
        self.cov_removed_x = self.cov_zx.new_zeros(o, c)         # cov(e_o, x_oj)
        self._buffers = None

    def candidates(self, left: torch.Tensor | None = None) -> torch.Tensor:
        """(C,): the loss with each channel removed too (meaningless for those already removed)."""
        if self.loss is not information_lost or not len(self.var_z):
            return self._candidates_general()
        # The same arithmetic as _candidates_general, in place in buffers kept from step to step: each
        # step of a wide group would otherwise allocate (and fault in) a dozen (O, C) float64 tensors.
        if self._buffers is None:
            self._buffers = tuple(torch.empty_like(self.cov_zx) for _ in range(4))
        cz, ve, kept, rho = self._buffers
        var_z = self.var_z[:, None]
        torch.add(self.cov_zx, self.cov_z_removed[:, None], out=cz)       # cov(z, e + x_j)
        torch.mul(self.cov_removed_x, 2, out=ve)                           # var(e + x_j), term by term
        ve.add_(self.var_removed[:, None]).add_(self.var_x)
        torch.mul(cz, 2, out=kept)                                         # var(z - e - x_j)
        kept.neg_().add_(var_z).add_(ve).clamp_min_(0)
        torch.sub(var_z, cz, out=rho)                                      # corr(z, z - e - x_j)
        rho.div_(kept.mul_(var_z).sqrt_().clamp_min_(1e-300))
        self._cz, self._ve = cz, ve
        lost = rho.clamp_(0, 1).pow_(2).neg_().add_(1)                     # information_lost(rho)
        return (lost.mul_(self.w) if isinstance(self.w, torch.Tensor) else self.w * lost).sum(0)

    def _candidates_general(self) -> torch.Tensor:
        self._cz = self.cov_z_removed[:, None] + self.cov_zx
        self._ve = self.var_removed[:, None] + 2 * self.cov_removed_x + self.var_x
        var_z = self.var_z[:, None]
        var_kept = (var_z - 2 * self._cz + self._ve).clamp_min(0)
        rho = (var_z - self._cz) / torch.sqrt(var_z * var_kept).clamp_min(1e-300)
        if not len(self.var_z):
            return self.cov_zx.new_zeros(self.cov_zx.shape[1])
        return (self.w * self.loss(rho)).sum(0)

    def remove(self, j: int) -> None:
        """Channel j goes (after a call to candidates())."""
        self.cov_z_removed, self.var_removed = self._cz[:, j].clone(), self._ve[:, j].clone()
        self.cov_removed_x.add_(self.cov[:, j, :])


def greedy_removal(loss, remove, channels: int, magnitude: torch.Tensor | None = None, tie: float = 0.0) -> torch.Tensor:
    """Scores (channels,) from a greedy removal order: `loss(left)` gives every channel's loss if it were
    removed next (left: the boolean mask of channels not yet removed), `remove(j)` commits a removal. A
    channel's score is the loss at the step it went, made increasing along the order.

    With `magnitude` (channels,) and `tie` > 0, magnitude breaks near-ties: each step removes, among the
    channels whose loss increment is at most min + tie x (median - min) of the increments (the lower
    median: with two channels left the band holds the cheaper one), the one of least magnitude (tie 0:
    the least loss; tie 1: the cheaper half by loss, then magnitude)."""
    if tie < 0 or (tie > 0 and (magnitude is None or magnitude.shape != (channels,))):
        raise ValueError(f"tie must be >= 0, and a tie > 0 needs one magnitude per channel ({channels})")
    left = scores = mag = None
    worst = float("-inf")   # a loss may be negative (a log)
    current = 0.0           # the loss of what is removed so far
    for step in range(channels):
        lost = loss(torch.ones(channels, dtype=torch.bool) if left is None else left)
        if left is None:
            left = torch.ones(channels, dtype=torch.bool, device=lost.device)
            scores = lost.new_zeros(channels)
            mag = magnitude.to(lost) if tie > 0 else None
        lost[~left] = float("inf")
        if mag is None:
            j = int(torch.argmin(lost))
        else:
            inc = lost[left] - current
            near = left.clone()
            near[left] = inc <= inc.min() + tie * (inc.median() - inc.min())
            j = int(torch.argmin(torch.where(near, mag, torch.full_like(mag, float("inf")))))
        current = float(lost[j])
        worst = max(worst, current)
        scores[j] = worst + step * 1e-12   # strictly increasing: the lowest k are the first k removed
        remove(j)
        left[j] = False
    return scores


def greedy_removal_scores(z: torch.Tensor, x: "torch.Tensor | GroupContributions", loss=information_lost,
                          weights: torch.Tensor | None = None, magnitude: torch.Tensor | None = None,
                          tie: float = 0.0) -> torch.Tensor:
    """Scores (C,) from the greedy removal order of CorrelationLoss(z, x, loss, weights) (default: sum_o
    (1 - rho_o^2)), near-ties broken by `magnitude` with `tie` > 0 (greedy_removal). `x` may be a
    GroupContributions (CorrelationLoss)."""
    channels = x.shape[2] if len(x.shape) == 3 else 0
    tracker = CorrelationLoss(z, x, loss, weights)
    return greedy_removal(tracker.candidates, tracker.remove, channels, magnitude, tie)
