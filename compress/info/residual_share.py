"""How much of a residual sum each branch output channel carries.

In a residual block the consumer's output (after its BatchNorm) b is added to the shortcut s, and what
the rest of the network reads is z = s + b. BatchNorm re-estimation gives a pruned branch b' back the
variance of b, so if b' keeps correlation rho with b (and s is left alone), the sum keeps

    corr(z, s + b') ~ 1 - (1 - rho) var(b) / var(z),

and the information z loses is the branch's loss weighted by its share of the sum, var(b) / var(z).
Measured per output channel on the calibration images: an output channel that adds a small correction
to a strong shortcut can lose more than one that carries most of its sum.

The addition is found with torch.fx (a consumer, then only BatchNorm, Identity or Dropout, then an
add); a model fx cannot trace gets no shares, and the caller says so.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn

_ADDS = {operator.add, operator.iadd, torch.add}
_PASS_THROUGH = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.Identity, nn.Dropout)


def branch_ends(gm: fx.GraphModule, consumers: set[str]) -> dict[str, tuple[str, int]]:
    """{consumer: (add node name, index of the branch among its args)} for every consumer in
    `consumers` whose output reaches an addition of two tensors through pass-through layers only."""
    modules = dict(gm.named_modules())
    out = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target not in consumers:
            continue
        cur = node
        while len(cur.users) == 1:
            user = next(iter(cur.users))
            if user.op == "call_module" and isinstance(modules.get(user.target), _PASS_THROUGH):
                cur = user
                continue
            is_add = (user.op == "call_function" and user.target in _ADDS) or \
                     (user.op == "call_method" and user.target in ("add", "add_"))
            tensors = [a for a in user.args if isinstance(a, fx.Node)]
            if is_add and len(user.args) == 2 and len(tensors) == 2 and tensors[0] is not tensors[1] \
                    and not user.kwargs:
                out[node.target] = (user.name, user.args.index(cur))
            break
    return out


def branch_shares(model: nn.Module, x: torch.Tensor, consumers: set[str], batch_size: int = 64,
                  ) -> tuple[dict[str, torch.Tensor], str | None]:
    """({consumer: var(b) / var(b + s) per output channel, float64 on the CPU}, None) for the consumers
    that end a residual branch, measured on `x`; ({}, why) when the model cannot be traced. Only
    (N, C) and (N, C, H, W) sums count (channels on dim 1)."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:   # data-dependent control flow, untraceable ops: no shares, said by the caller
        return {}, f"torch.fx cannot trace the model ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    ends = branch_ends(gm, consumers)
    if not ends:
        return {}, None
    by_add = {}
    for name, (add, index) in ends.items():
        by_add.setdefault(add, []).append((name, index))
    sums: dict[str, list] = {}

    class _Recorder(fx.Interpreter):
        def run_node(self, n):
            # copied before the add runs: an in-place add (`out += shortcut`) overwrites the branch
            branches = [(name, self.env[n.args[index]].detach().to(torch.float64, copy=True))
                        for name, index in by_add.get(n.name, [])]
            result = super().run_node(n)
            for name, b in branches:
                t = result.detach().double()
                if b.shape != t.shape or b.dim() not in (2, 4):   # (N, C) or (N, C, H, W): channels on dim 1
                    continue
                dims = [d for d in range(b.dim()) if d != 1]
                acc = sums.setdefault(name, [0, 0.0, 0.0, 0.0, 0.0])
                acc[0] += b.numel() // b.shape[1]
                acc[1] = acc[1] + b.sum(dims)
                acc[2] = acc[2] + (b * b).sum(dims)
                acc[3] = acc[3] + t.sum(dims)
                acc[4] = acc[4] + (t * t).sum(dims)
            return result

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            rec = _Recorder(gm)
            for i in range(0, len(x), batch_size):
                rec.run(x[i:i + batch_size])
    finally:
        model.train(was_training)
    shares = {}
    for name, (n, s1, s2, t1, t2) in sums.items():
        var_b = s2 / n - (s1 / n) ** 2
        var_t = t2 / n - (t1 / n) ** 2
        shares[name] = torch.where(var_t > 0, var_b / var_t.clamp_min(1e-300), torch.ones_like(var_t)).clamp(0, 1).cpu()
    return shares, None
