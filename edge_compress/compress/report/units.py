"""Numbers for people: budgets and metrics as `60 M MACs`, `1.45 ms`, `2.3 MB`, never Python reprs."""
from __future__ import annotations


def count(n: float | None) -> str:
    """A count with an SI suffix and three significant digits: 5928038.4 -> '5.93 M'."""
    if n is None:
        return "n/a"
    for div, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


def ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g} ms" if value < 100 else f"{value:.0f} ms"


def mb(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g} MB"


def budget(b: dict) -> str:
    """A resolved budget (Budget.to_dict()) as 'latency <= 1.45 ms, MACs <= 60 M'."""
    parts = []
    if b.get("latency_ms") is not None:
        parts.append(f"latency <= {ms(b['latency_ms'])}")
    if b.get("memory_mb") is not None:
        parts.append(f"memory <= {mb(b['memory_mb'])}")
    if b.get("macs") is not None:
        parts.append(f"MACs <= {count(b['macs'])}")
    if b.get("params") is not None:
        parts.append(f"params <= {count(b['params'])}")
    return ", ".join(parts) or "none"


def latency_kind(kind: str) -> str:
    """'measured: ...' / 'predicted: ...' -> 'measured' / 'predicted'."""
    return kind.split(":")[0].strip()
