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
    latency = f"latency {units.ms(o_ms)} -> {units.ms(f_ms)} {kind}{precision_text(report)}"
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
    text = accuracy_text(acc)
    if text:
        parts[-1] += ";"
        parts.append(text)
    guard = acc.get("guard")
    if guard:
        parts[-1] += ";"
        parts.append(guard_text(guard))
    return " ".join(parts)


def precision_text(report: dict) -> str:
    """' ±0.8 %': how precisely the final latency (or its ratio to the original, when the two were timed
    interleaved) is known at the report's confidence; '' when no interval is known."""
    precision = ((report.get("final") or {}).get("latency_stats") or {}).get("precision") or {}
    key = "ratio_half_width_pct" if precision.get("decided_by") == "ratio" else "half_width_pct"
    pct = precision.get(key)
    return f" ±{pct:.1f} %" if isinstance(pct, (int, float)) else ""


def guard_text(guard: dict) -> str:
    """'accuracy limit met: drop 1.56 points <= 2', 'accuracy limit binding: ...'."""
    if guard["unit"] == "points":
        value = f"drop {guard['value']:.2f} points {'<=' if guard['met'] else '>'} {guard['limit']:g}"
    else:
        value = f"agreement {guard['value']:.2f} % {'>=' if guard['met'] else '<'} {guard['limit']:g} %"
    state = "binding" if guard.get("binding") else ("met" if guard["met"] else "MISSED")
    return f"accuracy limit {state} ({guard['flag']}): {value} on {guard['samples']} held-out samples"


def accuracy_text(acc: dict) -> str | None:
    """The accuracy change in a few words, for every task: 'top-1 90.0% -> 85.0% on 96 calibration samples',
    'mIoU 0.71 -> 0.66 ...', 'rel. L2 error 0.03 (worst output: boxes), cosine >= 0.999 ...'."""
    if not acc.get("evaluated"):
        return None
    where = f"on {acc.get('samples')} calibration samples"
    task = acc.get("task") or "classification"
    if task == "segmentation":
        if "miou_final" in acc and "miou_original" in acc:
            return f"mIoU {acc['miou_original']:.2f} -> {acc['miou_final']:.2f} {where}"
        if "miou_vs_original" in acc:
            return f"mIoU {acc['miou_vs_original']:.2f} against the original's class maps {where}"
        return None
    if task == "outputs":
        if acc.get("metric_final") is None:
            return None
        worst = acc.get("worst_output")
        several = len(acc.get("outputs") or []) > 1
        text = f"rel. L2 error {acc['metric_final']:.2g}" + (f" (worst output: {worst})" if worst and several else "")
        if acc.get("cosine_similarity_min") is not None:
            text += f", cosine similarity {'>= ' if several else ''}{acc['cosine_similarity_min']:.3f}"
        return f"{text} against the original {where}"
    if "top1_final" in acc:
        change = 100 * (acc["top1_final"] - acc["top1_original"]) + 0.0   # + 0.0: no "-0.0"
        return f"top-1 {acc['top1_original']:.1%} -> {acc['top1_final']:.1%} ({change:+.1f} points) {where}"
    if "agreement_with_original" in acc:
        return (f"agrees with the original on {acc['agreement_with_original']:.1%} of {acc['samples']} "
                "calibration samples")
    return None
