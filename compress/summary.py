"""The one summary line a run prints: verdict (and whether it rests on a measurement or a prediction),
what changed, against what, and the accuracy next to it."""
from __future__ import annotations

from . import units


def verdict_label(verdict: str, final_latency_kind: str | None, budget: dict) -> str:
    """'MET (measured)', 'MISSED (predicted)'; a budget without latency has no measurement to qualify."""
    label = verdict.upper()
    if final_latency_kind and "latency_ms" in budget:
        label += f" ({units.latency_kind(final_latency_kind)})"
    return label


def summary_line(verdict: str, original: dict, final: dict, budget: dict, report: dict | None = None) -> str:
    """original/final: Metrics.to_dict(); budget: Budget.to_dict(); report: report.json as a dict."""
    report = report or {}
    kind = units.latency_kind(final.get("latency_kind", ""))
    o_ms, f_ms = original.get("latency_ms"), final.get("latency_ms")
    parts = [f"{verdict_label(verdict, final.get('latency_kind'), budget)}:"]
    latency = f"latency {units.ms(o_ms)} -> {units.ms(f_ms)} {kind}"
    if o_ms and f_ms:
        ratio = o_ms / f_ms
        latency += f" ({ratio:.2f}x faster)" if ratio >= 1 else f" (SLOWER: {1 / ratio:.2f}x the original's time)"
    quant = (report.get("export") or {}).get("quantization")
    if quant:
        latency += ", INT8 model vs FP32 original"
    parts.append(latency + ",")
    if original.get("macs") is not None and final.get("macs") is not None:
        parts.append(f"MACs {units.count(original['macs'])} -> {units.count(final['macs'])},")
    parts.append(f"params {units.count(original.get('params'))} -> {units.count(final.get('params'))};")
    parts.append(f"budget {units.budget(budget)}")
    acc = report.get("accuracy") or {}
    if acc.get("evaluated"):
        if "top1_final" in acc:
            parts[-1] += ";"
            parts.append(f"top-1 {acc['top1_original']:.1%} -> {acc['top1_final']:.1%} on {acc['samples']} "
                         "calibration samples")
        elif "agreement_with_original" in acc:
            parts[-1] += ";"
            parts.append(f"agrees with the original on {acc['agreement_with_original']:.1%} of {acc['samples']} "
                         "calibration samples")
    return " ".join(parts)
