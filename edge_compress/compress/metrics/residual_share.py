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


class BranchShares:
    """Runs `model` (traced by torch.fx) batch by batch and measures, for every consumer in `consumers`
    that ends a residual branch, var(b) / var(b + s) per output channel. Calling it runs the model's
    forward, module hooks included, so a caller that needs a pass over the data anyway gets the shares
    from the same pass. `why` says why there are none when the model cannot be traced (it then runs
    the model as it is)."""

    def __init__(self, model: nn.Module, consumers: set[str]):
        self.model, self.why, self._sums = model, None, {}
        try:
            gm = fx.symbolic_trace(model)
        except Exception as e:   # data-dependent control flow, untraceable ops: no shares, said by the caller
            self.why = f"torch.fx cannot trace the model ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
            self._interpreter = None
            return
        modules = dict(gm.named_modules())
        self._by_add: dict[str, list] = {}
        for name, (add, index) in branch_ends(gm, consumers).items():
            # a Linear's output channels are its last dimension (tokens, channels-last maps), a conv's dim 1
            dim = -1 if isinstance(modules[name], nn.Linear) else 1
            self._by_add.setdefault(add, []).append((name, index, dim))
        self._interpreter = _Recorder(gm, self) if self._by_add else None

    def __call__(self, batch: torch.Tensor):
        return self._interpreter.run(batch) if self._interpreter is not None else self.model(batch)

    def _record(self, name: str, dim: int, b: tuple, t: torch.Tensor) -> None:
        """Add a batch's sums: `b` the branch's (count, sum, sum of squares) from _moments, `t` the sum."""
        n, b1, b2 = b
        _, t1, t2 = _moments(t, dim)
        acc = self._sums.setdefault(name, [0, 0.0, 0.0, 0.0, 0.0])
        acc[0] += n
        acc[1] = acc[1] + b1
        acc[2] = acc[2] + b2
        acc[3] = acc[3] + t1
        acc[4] = acc[4] + t2

    def shares(self) -> dict[str, torch.Tensor]:
        """{consumer: var(b) / var(b + s) per output channel, float64 on the CPU}, over the batches run."""
        out = {}
        for name, (n, s1, s2, t1, t2) in self._sums.items():
            var_b = s2 / n - (s1 / n) ** 2
            var_t = t2 / n - (t1 / n) ** 2
            out[name] = torch.where(var_t > 0, var_b / var_t.clamp_min(1e-300), torch.ones_like(var_t)).clamp(0, 1).cpu()
        return out


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, owner: BranchShares):
        super().__init__(gm)
        self.owner = owner

    def run_node(self, n):
        ends = self.owner._by_add.get(n.name, [])
        # the branch's sums taken before the add runs: an in-place add (`out += shortcut`) overwrites it
        branches = [(name, dim, self.env[n.args[index]]) for name, index, dim in ends]
        branches = [(name, dim, b.shape, _moments(b, dim) if b.dim() >= 2 else None) for name, dim, b in branches]
        result = super().run_node(n)
        for name, dim, shape, b in branches:
            if b is not None and shape == result.shape:   # not a broadcast add
                self.owner._record(name, dim, b, result)
        return result


def _moments(t: torch.Tensor, dim: int) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(values per channel, sum, sum of squares) of `t` over every dimension but the channels' `dim`, in
    float64, through one float64 copy squared in place (the sums are those of t.double() and its square)."""
    dims = [d for d in range(t.dim()) if d != dim % t.dim()]
    v = t.detach().to(torch.float64, copy=True)
    s1 = v.sum(dims)
    s2 = v.mul_(v).sum(dims)
    return t.numel() // t.shape[dim], s1, s2
