"""report.html: one self-contained page rendered from a report.json dict.

Everything is inline (CSS, SVG drawn here) so the file opens offline, on a phone, from an e-mail attachment or a CI
artifact store that serves no other files, and so a product build can archive a single file per model. The output
depends only on the report (no clock, no randomness): re-rendering an unchanged report gives identical bytes.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Iterable

from .fmt import FINAL, MET, MISSED, ORIG, PRED, _e, _is_num, _num
from .svg import _PCTS, _bars_svg, _curve_svg, _latency_svg, _rounds_svg

__all__ = ["render_html"]


# Budget quantities: label, unit, formatter key. Unknown keys still render, with their raw name.
_QUANTITIES = {
    "latency_ms": ("Latency", "ms"),
    "memory_mb": ("Memory", "MB"),
    "macs": ("MACs", ""),
    "params": ("Parameters", ""),
}


# -- formatting -------------------------------------------------------------------------------------


def _pct(v: Any) -> str:
    return "&ndash;" if not _is_num(v) else f"{100 * v:.1f}%"


def _change(before: Any, after: Any) -> str:
    if not (_is_num(before) and _is_num(after)) or before == 0:
        return "&ndash;"
    return f"{100 * (after - before) / before:+.1f}%"


def _kv(rows: Iterable[tuple[str, str]]) -> str:
    """Key/value table; values are already-escaped HTML, keys are escaped here."""
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<div class="scroll"><table class="kv">{body}</table></div>' if body else ""


def _table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), stack: bool = False) -> str:
    """A table whose cells are already-escaped HTML; columns in `numeric` align right. A wide table scrolls in its
    own box; a `stack` table instead turns into one labelled block per row on a phone (no column is cut off)."""
    def cls(i):
        return ' class="n"' if i in numeric else ""

    def lab(i):
        return f' data-label="{_e(head[i])}"' if stack and i < len(head) and head[i] and i else ""
    th = "".join(f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}{lab(i)}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    t = ' class="stack"' if stack else ""
    return f'<div class="scroll"><table{t}><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{_e(title)}</h2>{body}</section>' if body else ""


def _legend(items: list[tuple[str, str]]) -> str:
    return '<p class="legend">' + "".join(
        f'<span class="sw" style="background:{c}"></span>{_e(t)}' for c, t in items) + "</p>"


def _get(d: Any, *path, default=None):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


# -- SVG labels that cannot collide ------------------------------------------------------------------
# Text width is estimated, not measured (no script): 0.6 x font size per character is a little wider than the
# average glyph of the sans-serif system fonts, so labels laid out with it keep apart in any of them.
# A white outline under a label drawn over lines keeps it legible.


# -- sections ---------------------------------------------------------------------------------------

_VERDICTS = {"met": ("met", "BUDGET MET", "&#10004;"), "missed": ("missed", "BUDGET MISSED", "&#10008;"),
             "no-budget": ("other", "NO BUDGET", "&#8505;")}


def _basis(r: dict, key: str) -> tuple[str, str]:
    """How the final value of a budget quantity was obtained: ('measured' | 'predicted' | 'counted' | '', detail)."""
    final = r.get("final") or {}
    kind = {"latency_ms": final.get("latency_kind"), "memory_mb": final.get("memory_kind")}.get(key)
    if key in ("macs", "params"):
        return "counted", "counted from the model"
    if not isinstance(kind, str) or not kind.strip():
        return "", ""
    word, _, detail = kind.partition(":")
    word = word.strip().lower()
    return (word if word in ("measured", "predicted") else ""), (detail.strip() or kind.strip())


def _precisions(r: dict) -> tuple[str, str] | None:
    """(final, original) precision when they differ: an INT8 model compared with the FP32 original."""
    q = _get(r, "export", "quantization")
    eng = r.get("engine") if isinstance(r.get("engine"), dict) else {}
    if (isinstance(q, dict) and q) or str(eng.get("precision") or "").lower() == "int8":
        fmt = q.get("format") if isinstance(q, dict) else None
        return ("INT8" + (f" ({fmt})" if fmt else ""), "FP32")
    return None


def _verdict_basis(r: dict) -> str:
    """'predicted' when a budgeted quantity of the verdict was predicted, 'measured' when the budgeted latency was
    measured and nothing was predicted, '' otherwise (only counted quantities, or no budget)."""
    kinds = {_basis(r, k)[0] for k in (r.get("budget") or {})}
    return "predicted" if "predicted" in kinds else "measured" if "measured" in kinds else ""


def _banner(r: dict) -> str:
    verdict = str(r.get("verdict") or "unknown").lower()
    cls, word, mark = _VERDICTS.get(verdict, ("other", f"VERDICT: {verdict.upper()}", "?"))
    how = _verdict_basis(r) if verdict in ("met", "missed") else ""
    if how:
        word += f" ({how})"
    budget = r.get("budget") or {}
    requested = _get(r, "inputs", "budget_requested") or {}
    final, original = r.get("final") or {}, r.get("original") or {}
    rows = []
    for key, limit in budget.items():
        label, unit = _QUANTITIES.get(key, (key, ""))
        achieved = final.get(key)
        basis = _basis(r, key)[0]
        tag = f' <span class="sub">{basis}</span>' if basis in ("measured", "predicted") else ""
        if _is_num(limit) and _is_num(achieved):
            ok = achieved <= limit
            status = ('<span class="ok">&#10004; met</span>' if ok else '<span class="bad">&#10008; missed</span>')
            status += tag
            if not limit:
                margin = ""
            elif ok:
                margin = f"{100 * (limit - achieved) / limit:.1f}% headroom"
            else:
                margin = f"{100 * (achieved - limit) / limit:.1f}% over"
        else:
            status, margin = '<span class="warn">not compared</span>', ""
        req = requested.get(key)
        rows.append([_e(label) + (f' <span class="sub">(asked: {_e(req)})</span>' if req is not None else ""),
                     _num(limit, unit), _num(original.get(key), unit), f"<b>{_num(achieved, unit)}</b>",
                     status, _e(margin)])
    # A requested quantity that did not resolve to a limit (e.g. a speedup) still deserves a line.
    for key, req in requested.items():
        if key not in budget and key != "profile_defaults":
            rows.append([_e(key) + f' <span class="sub">(asked: {_e(req)})</span>', "&ndash;", "&ndash;", "&ndash;",
                         '<span class="warn">no resolved limit</span>', ""])
    model = _get(r, "inputs", "model") or {}
    target = _get(r, "inputs", "target") or {}
    what = " &middot; ".join(x for x in (
        _e(model.get("arch") or model.get("path")),
        "target <b>" + _e(target.get("name")) + "</b>" if target.get("name") else "",
        _e(target.get("description"))) if x)
    table = (_table(["Quantity", "Budget", "Original", "Final", "Status", "Margin"], rows, {1, 2, 3}, stack=True)
             if rows else '<p>No budget was given: the report only describes the model.</p>')
    if budget and isinstance(requested.get("profile_defaults"), dict):
        table += '<p class="sub">Budget: the target profile\'s defaults (none was asked for).</p>'
    return (f'<div class="banner {cls}" id="verdict"><div class="word">{mark} {_e(word)}</div>'
            f'<p>{what}</p>{_slower(original, final)}{_compared(r)}{table}{_accuracy_line(r)}</div>')


def _slower(original: dict, final: dict) -> str:
    """The warning when the final model runs slower than the original, whatever the budget (a MACs or
    parameter budget can be met by a slower model)."""
    o_ms, f_ms = original.get("latency_ms"), final.get("latency_ms")
    if not (_is_num(o_ms) and _is_num(f_ms)) or not o_ms or f_ms <= o_ms:
        return ""
    basis = _basis({"final": final}, "latency_ms")[0] or "latency"
    return (f'<p class="bad"><b>&#9888; SLOWER:</b> the final model\'s {_e(basis)} latency {_num(f_ms, "ms")} is '
            f'{f_ms / o_ms:.2f}x the original\'s {_num(o_ms, "ms")}.</p>')


def _accuracy_line(r: dict) -> str:
    """The accuracy change next to the verdict (the console summary's words), linking to the section."""
    from .summary import accuracy_text, guard_text

    a = r.get("accuracy")
    try:
        text = accuracy_text(a) if isinstance(a, dict) else None
        guard = guard_text(a["guard"]) if isinstance(a, dict) and a.get("guard") else None
    except (TypeError, ValueError, KeyError):   # a hand-edited report: the section below still shows what it has
        text = guard = None
    line = f'<p><b>Accuracy:</b> <a href="#accuracy">{_e(text)}</a>.</p>' if text else ""
    return line + (f'<p><b>{_e(guard[0].upper() + guard[1:])}</b>.</p>' if guard else "")


def _compared(r: dict) -> str:
    """The banner's comparison line: which two models the verdict compares, and how each number was obtained."""
    if not (r.get("final") or r.get("original")):
        return ""
    prec = _precisions(r)
    if r.get("mode") == "validate":
        head = "the given model, measured as it is (nothing was pruned)"
    elif prec:
        head = f"<b>{_e(prec[0])} model vs {_e(prec[1])} original</b>"
    else:
        head = "final model vs original"
    how = []
    keys = list(r.get("budget") or {}) or ["latency_ms"]
    if "latency_ms" not in keys and _basis(r, "latency_ms")[0]:
        keys.append("latency_ms")
    for key in keys:
        basis, detail = _basis(r, key)
        if not basis:
            continue
        label = _QUANTITIES.get(key, (key, ""))[0]
        label = _e(label if key == "macs" else label.lower())
        if basis == "counted":
            how.append(f"{label} counted")
        else:
            how.append(f'{label} <b>{basis}</b> <span class="sub">({_e(detail)})</span>')
    if prec and _basis(r, "latency_ms")[0] == "measured":
        how.append(f"the final latency is the {_e(prec[0].split()[0])} engine's")
    return (f'<p class="cmp"><b>Compared:</b> {head}' + ("; " + "; ".join(how) if how else "") + ".</p>")


def _summary(r: dict) -> str:
    o, f = r.get("original") or {}, r.get("final") or {}
    rows = []
    for key, label, unit in (("latency_ms", "Latency (median)", "ms"), ("memory_mb", "Memory", "MB"),
                             ("macs", "MACs", ""), ("params", "Parameters", "")):
        if key in o or key in f:
            rows.append([_e(label), _num(o.get(key), unit), _num(f.get(key), unit), _change(o.get(key), f.get(key))])
    body = _table(["", "Original", "Final", "Change"], rows, {1, 2, 3}) if rows else ""
    if f.get("memory_kind"):
        body += f'<p class="sub">Memory: {_e(f["memory_kind"])}</p>'
    return _section("summary", "Original vs final", body)


def _latency(r: dict) -> str:
    o, f = r.get("original") or {}, r.get("final") or {}
    limit = _get(r, "budget", "latency_ms")
    so, sf = o.get("latency_stats"), f.get("latency_stats")
    parts = []
    kinds = [(n, d.get("latency_kind")) for n, d in (("Original", o), ("Final", f)) if d.get("latency_kind")]
    if len(kinds) == 2 and kinds[0][1] == kinds[1][1]:
        parts.append(f"<p><b>How:</b> {_e(kinds[0][1])}</p>")
    else:
        parts.extend(f"<p><b>{_e(n)}:</b> {_e(k)}</p>" for n, k in kinds)
    series = [(n, c, s) for n, c, s in (("original", ORIG, so), ("final", FINAL, sf)) if isinstance(s, dict)]
    if series:
        parts.append("<figure>" + _latency_svg(series, limit) + "<figcaption>Whisker: min to max (an arrow: max is "
                     "off the axis); box: median to p95; "
                     "thick tick: median; thin ticks: p90 and p99"
                     + ("; dashed red: latency budget" if _is_num(limit) else "") + ".</figcaption></figure>")
        head = ["", *[lbl for _, lbl in _PCTS], "mean", "std", "runs", "warm-up", "batch", "throughput"]
        rows = []
        for n, _, s in series:
            rows.append([_e(n), *[_num(s.get(k)) for k, _ in _PCTS], _num(s.get("mean_ms")), _num(s.get("std_ms")),
                         _num(s.get("runs")), _num(s.get("warmup_runs")), _num(s.get("batch_size")),
                         _num(s.get("throughput_ips"), "/s")])
        parts.append(_table(head, rows, set(range(1, len(head)))))
        parts.extend(_precision_line(n, s.get("precision")) for n, _, s in series if isinstance(s.get("precision"), dict))
        where = [(k, s.get(k)) for k in ("where", "runtime", "provider", "threads") for _, _, s in series[-1:]
                 if s.get(k) is not None]
        if where:
            parts.append('<p class="sub">' + " &middot; ".join(f"{_e(k)}: {_e(v)}" for k, v in where) + "</p>")
    elif _is_num(o.get("latency_ms")) or _is_num(f.get("latency_ms")):
        # A prediction is one number per model: no distribution to draw, so show the two values side by side.
        items = [(n, d.get("latency_ms"), c, _num(d.get("latency_ms"), "ms"))
                 for n, d, c in (("original", o, ORIG), ("final", f, FINAL))]
        parts.append("<figure>" + _bars_svg(items, "ms", "latency, original and final", limit)
                     + "<figcaption>No distribution: the latency was not measured, so there is one predicted value "
                     "per model" + ("; dashed red: latency budget" if _is_num(limit) and limit <= max(
                         [v for _, v, _, _ in items if _is_num(v)] or [0]) * 1.5 else "") + ".</figcaption></figure>")
    if _is_num(limit) and (series or _is_num(f.get("latency_ms"))):
        parts.append(f"<p>Latency budget: <b>{_num(limit, 'ms')}</b></p>")
    return _section("latency", "Latency: original vs final", "".join(parts) if len(parts) > 0 else "")


def _precision_line(name: str, p: dict) -> str:
    """How precisely one median is known and why its timing stopped (report.model.TimingPrecision)."""
    conf = f"{100 * p['confidence']:.0f} %" if _is_num(p.get("confidence")) else "95 %"
    text = f"<b>{_e(name)}:</b> "
    if _is_num(p.get("low_ms")) and _is_num(p.get("high_ms")):
        text += f"median's {conf} interval {_num(p['low_ms'], 'ms')} to {_num(p['high_ms'], 'ms')}"
        if _is_num(p.get("half_width_pct")):
            text += f" (&plusmn;{p['half_width_pct']:.2f} %)"
    else:
        text += "no interval of the median (single runs not seen here)"
    if p.get("decided_by") == "ratio" and _is_num(p.get("ratio_half_width_pct")):
        text += f"; per-pair ratio to the other model {p.get('ratio'):.4g} (&plusmn;{p['ratio_half_width_pct']:.2f} %)"
    why = {"precision": "precision reached", "max_runs": "run cap reached", "time_cap": "time cap reached",
           "fixed": "fixed run count"}.get(p.get("stopped_on"), _e(p.get("stopped_on")))
    target = f", asked &plusmn;{p['target_pct']:g} %" if _is_num(p.get("target_pct")) else ""
    note = f" ({_e(p['note'])})" if p.get("note") else ""
    return f'<p class="sub">{text}; {_num(p.get("runs"))} runs, stopped: {why}{target}{note}.</p>'


def _breakable(name: Any) -> str:
    """An escaped layer name that wraps after its dots and underscores (stage.block.conv), not mid-word."""
    return _e(name).replace(".", ".<wbr>").replace("_", "_<wbr>")


def _layers(r: dict) -> str:
    layers = [x for x in (r.get("layers") or []) if isinstance(x, dict)]
    if not layers:
        return ""
    cmax = max([x.get("out_channels_before") or 0 for x in layers] + [1])
    bars = []
    for x in layers:
        b, a = x.get("out_channels_before"), x.get("out_channels_after")
        wb = 100 * (b or 0) / cmax
        wa = 100 * (a or 0) / cmax
        changed = _is_num(a) and _is_num(b) and a != b
        bars.append(f'<div class="nm">{_breakable(x.get("name"))}</div>'
                    f'<div class="tr"><div class="b0" style="width:{wb:.1f}%"></div>'
                    f'<div class="b1" style="width:{wa:.1f}%"></div></div>'
                    f'<div class="v">{"<b>" if changed else ""}{_num(b)} &rarr; {_num(a)}{"</b>" if changed else ""}'
                    f'</div>')
    body = (_legend([("#d0d7de", "output channels before"), (FINAL, "after")])
            + f'<div class="lbars" role="img" aria-label="output channels per layer before and after">{"".join(bars)}</div>')
    rows = []
    for x in layers:
        rows.append([f'<span class="mono">{_e(x.get("name"))}</span>', _e(x.get("kind")),
                     f'{_num(x.get("in_channels_before"))} &rarr; {_num(x.get("in_channels_after"))}',
                     f'{_num(x.get("out_channels_before"))} &rarr; {_num(x.get("out_channels_after"))}',
                     _num(x.get("macs_before")), _num(x.get("macs_after")),
                     _change(x.get("macs_before"), x.get("macs_after")), _pct(x.get("predicted_latency_share"))])
    body += "<h3>Per-layer table</h3>" + _table(
        ["Layer", "Kind", "In ch.", "Out ch.", "MACs before", "MACs after", "MACs change", "Pred. latency share"],
        rows, {2, 3, 4, 5, 6, 7})
    blocks = _get(r, "pruning", "blocks_removed")
    if blocks:
        body += "<p><b>Blocks removed:</b> " + ", ".join(f'<code>{_e(b)}</code>' for b in blocks) + "</p>"
    return _section("layers", "Per-layer channels", body)


def _is_measured(kind: Any) -> bool:
    return isinstance(kind, str) and kind.lower().startswith("measured")


def _rounds(r: dict) -> str:
    rounds = [x for x in (_get(r, "pruning", "rounds") or []) if isinstance(x, dict)]
    if not rounds:
        return ""
    pred = [x.get("predicted_latency_ms") for x in rounds]
    meas = [_get(x, "metrics", "latency_ms") if _is_measured(_get(x, "metrics", "latency_kind")) else None
            for x in rounds]
    parts = []
    # Round 0 is the original model, so the chart starts from where pruning started.
    p0 = rounds[0].get("predicted_latency_before_ms")
    o = r.get("original") or {}
    m0 = o.get("latency_ms") if _is_measured(o.get("latency_kind")) else None
    pts_p = [p0, *pred]
    pts_m = [m0, *meas]
    if any(_is_num(v) for v in pts_p + pts_m):
        parts.append("<figure>" + _rounds_svg(pts_p, pts_m, _get(r, "budget", "latency_ms")) + "</figure>")
        leg = [(PRED, "predicted (cost model)")]
        if any(_is_num(v) for v in pts_m):
            leg.append((FINAL, "measured"))
        parts.insert(0, _legend(leg))
    if not any(_is_num(v) for v in meas):
        parts.append('<p class="sub">The rounds were not measured on the target (no measurement method or device), '
                     "so only the cost model's prediction is shown.</p>")
    rows = []
    for i, x in enumerate(rounds, 1):
        m = x.get("metrics") or {}
        met = x.get("meets_budget")
        verdict = ('<span class="ok">&#10004; yes</span>' if met else ('<span class="bad">&#10008; no</span>'
                                                                       if met is False else "&ndash;"))
        if x.get("undone"):   # the search went back to the round before: an accuracy limit broken, or far past the budget
            why = x.get("undone_why") or ("broke the accuracy limit" if _get(x, "accuracy_guard", "within_limit")
                                          is False else "")
            verdict += f' <span class="sub">undone{": " + _e(why) if why else ""}</span>'
        rows.append([str(i), _e(x.get("selection")), _e(x.get("binding")), _num(x.get("channels_removed")),
                     _num(m.get("macs")), _num(x.get("predicted_latency_ms")), _num(meas[i - 1]),
                     _num(x.get("measured_over_predicted"), digits=3), verdict])
    parts.append(_table(["Round", "Selection", "Binding", "Channels removed", "MACs", "Predicted ms", "Measured ms",
                         "Measured / predicted", "Met"], rows, {0, 3, 4, 5, 6, 7}))
    return _section("rounds", "Pruning rounds: predicted vs measured latency", _criterion_line(r) + "".join(parts))


def _accuracy(r: dict) -> str:
    a = r.get("accuracy")
    if not isinstance(a, dict) or not a:
        return ""
    if not a.get("evaluated"):
        why = a.get("why") or a.get("reason") or a.get("why_not") or "no evaluation data was given"
        return _section("accuracy", "Accuracy", f"<p>Not evaluated: {_e(why)}.</p>")
    task = a.get("task") or "classification"
    if task == "outputs":
        body = _accuracy_outputs(a)
    elif task == "segmentation":
        body = _accuracy_segmentation(a)
    else:
        body = _accuracy_classification(a)
    return _section("accuracy", "Accuracy", body)


def _accuracy_common(a: dict) -> list[tuple[str, str | None]]:
    metric = a.get("metric")
    against = {"labels": "the data's labels", "original": "the original model's outputs"}.get(a.get("against"))
    return [("Metric", (f"{_e(metric)} against {against}" if against else _e(metric))
             + (f'<div class="sub">{_e(a["metric_description"])}</div>' if a.get("metric_description") else "")
             if metric else None),
            ("Data", _e(a.get("data")) if a.get("data") else None), ("Samples", _num(a.get("samples"))),
            ("Labels from", _e(a.get("labels_from")) if a.get("labels_from") else None),
            ("Accuracy limit", _guard_cell(a.get("guard")))]


def _guard_cell(guard) -> str | None:
    if not isinstance(guard, dict):
        return None
    from .summary import guard_text

    try:
        return (_e(guard_text(guard)) + f'<div class="sub">{_e(guard.get("measure", ""))}; '
                f'{_e(guard.get("held_out", ""))}</div>')
    except (TypeError, ValueError, KeyError):   # a hand-edited report
        return None


def _kv_present(rows) -> str:
    return _kv([(k, v) for k, v in rows if v and v != "&ndash;"])


def _accuracy_classification(a: dict) -> str:
    items = [(n, a.get(k), c, _pct(a.get(k)).replace("&ndash;", "-"))
             for n, k, c in (("top-1 original", "top1_original", ORIG), ("top-1 final", "top1_final", FINAL),
                             ("agreement", "agreement_with_original", PRED)) if _is_num(a.get(k))]
    body = ""
    if items:
        body += "<figure>" + _bars_svg([(n, 100 * v, c, t) for n, v, c, t in items], "%",
                                       "accuracy before and after") + "</figure>"
    body += _kv_present([
        ("Top-1 original", _pct(a.get("top1_original"))), ("Top-1 final", _pct(a.get("top1_final"))),
        ("Change", f"{100 * (a['top1_final'] - a['top1_original']):+.1f} points"
         if _is_num(a.get("top1_final")) and _is_num(a.get("top1_original")) else None),
        ("Agreement with original", _pct(a.get("agreement_with_original"))), *_accuracy_common(a)])
    if a.get("labels_from") and a.get("labels_from") != "data":
        body += ('<p class="sub">Top-1 here is measured against labels from '
                 f'{_e(a.get("labels_from"))}, not ground truth.</p>')
    return body


def _accuracy_segmentation(a: dict) -> str:
    items = [(n, a.get(k), c, f"{a[k]:.3f}")
             for n, k, c in (("mIoU original", "miou_original", ORIG), ("mIoU final", "miou_final", FINAL),
                             ("mIoU vs original", "miou_vs_original", PRED)) if _is_num(a.get(k))]
    body = ""
    if items:
        body += "<figure>" + _bars_svg([(n, v, c, t) for n, v, c, t in items], "",
                                       "mean IoU before and after") + "</figure>"

    def iou(k):
        return f"{a[k]:.3f}" if _is_num(a.get(k)) else None
    body += _kv_present([
        ("mIoU original", iou("miou_original")), ("mIoU final", iou("miou_final")),
        ("Change", f"{a['miou_final'] - a['miou_original']:+.3f}"
         if _is_num(a.get("miou_final")) and _is_num(a.get("miou_original")) else None),
        ("mIoU against the original's maps", iou("miou_vs_original")),
        ("Pixel accuracy original", _pct(a.get("pixel_accuracy_original"))),
        ("Pixel accuracy final", _pct(a.get("pixel_accuracy_final"))),
        ("Pixels whose class did not change", _pct(a.get("agreement_with_original"))),
        ("Classes", _num(a.get("classes"))), *_accuracy_common(a)])
    return body


def _accuracy_outputs(a: dict) -> str:
    rows = [[f"<code>{_e(o.get('name'))}</code>", _num(o.get("rel_l2_error"), digits=3),
             _num(o.get("cosine_similarity"), digits=4)]
            for o in a.get("outputs") or [] if isinstance(o, dict)]
    body = '<p>Each output of the compressed model against the original\'s on the same inputs.</p>'
    if rows:
        body += _table(["Output", "Rel. L2 error", "Cosine similarity"], rows, numeric={1, 2})
    body += _kv_present([("Worst output", f"<code>{_e(a['worst_output'])}</code>" if a.get("worst_output") else None),
                         *_accuracy_common(a)])
    if a.get("labels_used") is False:
        body += ('<p class="sub">The data\'s labels were not used: with these outputs there is no single class '
                 "prediction to compare them with.</p>")
    return body


def _curves(r: dict) -> str:
    cd = _get(r, "pruning", "criterion_details")
    if not isinstance(cd, dict):
        return ""
    layers = cd.get("layers") if isinstance(cd.get("layers"), dict) else {
        k: v for k, v in cd.items() if isinstance(v, dict) and k != "options"}
    if not layers:
        return ""
    crit = _get(r, "pruning", "criterion")
    parts = []
    curves = {k: v for k, v in layers.items() if isinstance(v, dict) and isinstance(v.get("curve"), list)}
    if curves:
        parts.append('<p>Each curve is the information about the labels left in the layer\'s other channels after '
                     'choosing <i>t</i> channels (nats); the dashed line marks the cutoff: the channels kept.</p>')
        cards = []
        for name, d in curves.items():
            cap = f'keep {_num(d.get("keep"))} of {_num(d.get("channels") or len(d["curve"]) - 1)}'
            if d.get("cutoff"):
                cap += f" &middot; cutoff rule: {_e(d['cutoff'])}"
            pv = [v for v in d.get("p_values") or [] if _is_num(v)]
            if pv:
                cap += f" &middot; p-values: {', '.join(f'{v:.3g}' for v in pv[:6])}{' ...' if len(pv) > 6 else ''}"
            cards.append(f'<div class="card">{_curve_svg(str(name), d)}<div class="sub">{cap}</div></div>')
        parts.append(f'<div class="grid">{"".join(cards)}</div>')
    others = {k: v for k, v in layers.items() if k not in curves and isinstance(v, dict)
              and isinstance(v.get("scores"), list)}
    if others:
        rows = []
        for name, d in others.items():
            s = sorted(v for v in d["scores"] if _is_num(v))
            keep = d.get("keep")
            kept = len(keep) if isinstance(keep, list) else keep
            med = (s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2) if s else None
            rows.append([f'<span class="mono">{_e(name)}</span>', _num(len(d["scores"])),
                         _num(s[0] if s else None), _num(med), _num(s[-1] if s else None), _num(kept)])
        parts.append("<p>Per-layer channel scores (the higher, the more a channel is worth keeping).</p>"
                     + _table(["Layer", "Channels", "Min", "Median", "Max", "Kept by criterion"], rows,
                              {1, 2, 3, 4, 5}))
    opts = cd.get("options")
    if isinstance(opts, dict) and opts:
        parts.append('<p class="sub">Criterion options: '
                     + ", ".join(f"{_e(k)}={_e(v)}" for k, v in opts.items()) + "</p>")
    if not parts:
        return ""
    return _section("curves", f"What drove the choices ({crit})" if crit else "What drove the choices",
                    "".join(parts))


def _criterion_line(r: dict) -> str:
    p = r.get("pruning") or {}
    if not p.get("criterion"):
        return ""
    line = f"<p><b>Criterion:</b> <code>{_e(p['criterion'])}</code>"
    if p.get("criterion_description"):
        line += f" &mdash; {_e(p['criterion_description'])}"
    if p.get("selection"):
        line += f"; selection: {_e(p['selection'])}"
    if _is_num(p.get("bn_recalibrated_layers")):
        line += f"; BatchNorm re-estimated in {p['bn_recalibrated_layers']} layers"
    line += "</p>"
    rec = p.get("recovery")
    if isinstance(rec, dict) and rec:
        line += "<h3>Recovery</h3>" + _kv([(k, _scalar(v)) for k, v in rec.items() if _scalar(v)])
    return line


def _scalar(v: Any) -> str:
    """A compact, escaped rendering of a scalar or short list; '' for nested data, which would not read well here."""
    if v is None or isinstance(v, dict):
        return ""
    if isinstance(v, list):
        if len(v) > 8 or any(isinstance(i, (dict, list)) for i in v):
            return f"{len(v)} values" if v else ""
        return ", ".join(_num(i) if _is_num(i) else _e(i) for i in v)
    return _num(v) if _is_num(v) or isinstance(v, bool) else _e(v)


def _export(r: dict) -> str:
    ex = r.get("export") or {}
    parts = []
    par = ex.get("parity")
    if isinstance(par, dict) and par:
        passed = par.get("passed")
        verdict = ('<span class="ok">&#10004; passed</span>' if passed else
                   '<span class="bad">&#10008; failed</span>' if passed is False else "&ndash;")
        parts.append("<h3>Parity: PyTorch vs ONNX</h3>" + _kv([
            ("Result", verdict), ("Max abs error", _num(par.get("max_abs"), digits=3)),
            ("Max rel error", _num(par.get("max_rel"), digits=3)),
            ("Tolerance", f"atol {_num(par.get('atol'))}, rtol {_num(par.get('rtol'))}"),
            ("Samples", _num(par.get("samples"))), ("Runtime", _e(par.get("runtime")))]
            + ([("Reason", _e(par["reason"]))] if par.get("reason") else [])))
        outs = [o for o in par.get("outputs") or [] if isinstance(o, dict)]
        if len(outs) > 1:   # each output on its own scale; the numbers above are the worst one's
            parts.append(_table(["Output", "Shape", "Max abs error", "Max rel error", "Scale", "Result"], [
                [f"<code>{_e(o.get('name'))}</code>", _scalar(o.get("shape")), _num(o.get("max_abs"), digits=3),
                 _num(o.get("max_rel"), digits=3), _num(o.get("scale"), digits=3),
                 ('<span class="ok">&#10004;</span>' if o.get("passed") else '<span class="bad">&#10008;</span>')
                 + (f" {_e(o['reason'])}" if o.get("reason") else "")] for o in outs], numeric={2, 3, 4}))
    q = ex.get("quantization")
    if isinstance(q, dict) and q:
        parts.append('<div id="quantization"><h3>Quantization</h3>' + _kv([
            (k.replace("_", " ").capitalize(), f'<span class="mono hash">{_e(v)}</span>' if k == "sha256" else _scalar(v))
            for k, v in q.items() if _scalar(v)]) + "</div>")
    onnx, simp = ex.get("onnx"), ex.get("simplify")
    rows = []
    if isinstance(onnx, dict):
        rows += [("ONNX opset", _num(onnx.get("opset"))), ("Exporter", _e(onnx.get("exporter"))),
                 ("Input", f"{_e(onnx.get('input_name'))} {_scalar(onnx.get('input_shape'))}"),
                 ("Output" if len(onnx.get("output_names") or [1]) == 1 else "Outputs",
                  ", ".join(f"{_e(n)} {_scalar(sh)}" for n, sh in
                            zip(onnx.get("output_names") or [onnx.get("output_name")],
                                onnx.get("output_shapes") or [onnx.get("output_shape")]))),
                 ("Op types", _scalar(onnx.get("op_types")))]
    if isinstance(simp, dict):
        rows.append(("Simplified", (f"{_num(simp.get('nodes_before'))} &rarr; {_num(simp.get('nodes_after'))} nodes"
                                    if simp.get("simplified") else f"no ({_e(simp.get('reason'))})")))
    if rows:
        parts.append("<h3>ONNX</h3>" + _kv([(k, v) for k, v in rows if v.strip()]))
    eng = r.get("engine")
    if isinstance(eng, dict) and eng:
        erows = [(k.replace("_", " ").capitalize(), _scalar(v)) for k, v in eng.items()
                 if k not in ("sha256", "argv", "bundle") and _scalar(v)]
        if isinstance(eng.get("argv"), list):
            erows.append(("Build command", f'<code>{_e(" ".join(map(str, eng["argv"])))}</code>'))
        bundle = eng.get("bundle")
        if isinstance(bundle, dict) and isinstance(bundle.get("files"), list):
            erows.append(("Device bundle", ", ".join(f"<code>{_e(b)}</code>" for b in bundle["files"])))
        parts.append('<div id="engine"><h3>Engine</h3>' + _kv(erows) + "</div>")
    return _section("export", "Export, parity and engine", "".join(parts))


def _timings(r: dict) -> str:
    t = {k: v for k, v in (r.get("timings_s") or {}).items() if _is_num(v)}
    if not t:
        return ""
    total = sum(t.values())
    items = [(k, v, FINAL, f"{v:.3g} s") for k, v in t.items()]
    return _section("timings", "Stage timings", "<figure>" + _bars_svg(items, "s", "stage timings")
                    + f"<figcaption>Total of the stages: {total:.3g} s.</figcaption></figure>")


def _environment(r: dict) -> str:
    env = r.get("environment") or {}
    target = _get(r, "inputs", "target") or {}
    parts = []
    trows = []
    if target:
        trows += [("Profile", _e(target.get("name"))), ("Description", _e(target.get("description")))]
        rt = target.get("runtime") or {}
        if rt:
            trows.append(("Runtime", _e(" ".join(str(x) for x in (rt.get("engine"), rt.get("version"),
                                                                  rt.get("precision")) if x))))
        meas = target.get("measurement") or {}
        if meas:
            trows.append(("Measurement", _e(", ".join(f"{k} {v}" for k, v in meas.items()
                                                      if v is not None and not isinstance(v, (dict, list))))))
        cm = target.get("cost_model") or {}
        if cm.get("source"):
            trows.append(("Cost model", _e(cm["source"])))
        fit = cm.get("fit") or {}
        if _is_num(fit.get("median_abs_error_pct")):
            trows.append(("Cost model error", f"median {fit['median_abs_error_pct']:.3g}%, max "
                                              f"{_num(fit.get('max_abs_error_pct'), digits=3)}% over "
                                              f"{_num(fit.get('samples'))} samples"))
    inputs = r.get("inputs") or {}
    model = inputs.get("model") or {}
    if model:
        trows.append(("Model", f"{_e(model.get('path'))} ({_e(model.get('kind'))}, {_e(model.get('arch'))})"))
        if model.get("sha256"):
            trows.append(("Model sha256", f'<span class="mono hash">{_e(model["sha256"])}</span>'))
    for k in ("input_shape", "criterion", "seed", "step"):
        if inputs.get(k) is not None:
            trows.append((k.replace("_", " ").capitalize(), _scalar(inputs[k])))
    cal = inputs.get("calibration") or {}
    if cal:
        trows.append(("Calibration", _e(f"{cal.get('source')}, {cal.get('samples')} samples")))
    if trows:
        parts.append("<h3>Inputs and target</h3>" + _kv([(k, v) for k, v in trows if v]))
    versions = env.get("versions") or {}
    if versions:
        parts.append("<h3>Versions</h3>" + _kv([(k, _e(v)) for k, v in versions.items()]))
    host = [(k.replace("_", " "), _scalar(v)) for k, v in env.items()
            if k != "versions" and k not in versions and _scalar(v)]
    if host:
        parts.append("<h3>Machine</h3>" + _kv(host))
    return _section("environment", "Environment and inputs", "".join(parts))


def _artifacts(r: dict) -> str:
    a = r.get("artifacts") or {}
    if not a:
        return ""
    rows = [[f"<code>{_e(k)}</code>", f'<span class="mono hash">{_e(v)}</span>'] for k, v in a.items()]
    return _section("artifacts", "Artifacts", _table(["File", "sha256"], rows))


def _notes(r: dict) -> str:
    notes = [n for n in (r.get("notes") or []) if n]
    if not notes:
        return ""
    return _section("notes", "Notes", "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")


def render_html(report: dict) -> str:
    """The whole report.html for one report.json dict; tolerant of missing optional keys."""
    r = report if isinstance(report, dict) else {}
    target = _get(r, "inputs", "target", "name")
    model = _get(r, "inputs", "model", "arch") or _get(r, "inputs", "model", "path")
    title = "Compression report" + (f": {model}" if model else "") + (f" on {target}" if target else "")
    verdict = str(r.get("verdict") or "unknown").upper()
    how = _verdict_basis(r) if verdict in ("MET", "MISSED") else ""
    verdict += f" ({how})" if how else ""
    # Each section escapes what it takes from the report (_e) as it builds its markup, so the template marks it
    # safe; everything else the template prints is autoescaped.
    sections = [build(r) for build in (_banner, _summary, _latency, _layers, _rounds, _accuracy, _curves,
                                               _export, _timings, _environment, _artifacts, _notes)]
    page = _templates().get_template("report.html.j2")
    return page.render(title=title, verdict=verdict, sections=sections, schema_version=r.get("schema_version"),
                       version=_get(r, "environment", "versions", "edge-compress"))


@lru_cache(maxsize=1)
def _templates():
    # Imported lazily: `compress --help` should not pay for Jinja2.
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(loader=PackageLoader("edge_compress.compress.report", "templates"), autoescape=True,
                       undefined=StrictUndefined, keep_trailing_newline=True)
