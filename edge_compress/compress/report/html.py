"""report.html: one self-contained page rendered from a report.json dict.

Everything is inline (CSS, SVG drawn here) so the file opens offline, on a phone, from an e-mail attachment or a CI
artifact store that serves no other files, and so a product build can archive a single file per model. The output
depends only on the report (no clock, no randomness): re-rendering an unchanged report gives identical bytes.
"""
from __future__ import annotations

import html
import math
from typing import Any, Iterable

__all__ = ["render_html"]

MET, MISSED, BAD = "#1a7f37", "#b42318", "#9a6700"
ORIG, FINAL, PRED = "#8c959f", "#0969da", "#bf8700"

# Budget quantities: label, unit, formatter key. Unknown keys still render, with their raw name.
_QUANTITIES = {
    "latency_ms": ("Latency", "ms"),
    "memory_mb": ("Memory", "MB"),
    "macs": ("MACs", ""),
    "params": ("Parameters", ""),
}

_CSS = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;padding:0 12px 32px;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
color:#1f2328;background:#fff;overflow-wrap:break-word}
main{max-width:960px;margin:0 auto}
h1{font-size:1.35em;margin:18px 0 4px}
h2{font-size:1.12em;margin:28px 0 8px;padding-bottom:4px;border-bottom:1px solid #d0d7de}
h3{font-size:1em;margin:14px 0 6px}
p{margin:6px 0}
svg{max-width:100%}
.sub{color:#57606a;font-size:.9em}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.88em}
.hash{word-break:break-all}
.banner{border:2px solid;border-radius:8px;padding:12px 14px;margin:12px 0}
.banner .word{font-size:1.6em;font-weight:700;letter-spacing:.02em}
.banner.met{border-color:#1a7f37;background:#dafbe1}
.banner.missed{border-color:#b42318;background:#ffebe9}
.banner.other{border-color:#9a6700;background:#fff8c5}
.banner .cmp{font-size:.9em}
.scroll{max-width:100%;overflow-x:auto;-webkit-overflow-scrolling:touch;margin:6px 0;
background:linear-gradient(90deg,#fff 30%,rgba(255,255,255,0)),
linear-gradient(90deg,rgba(255,255,255,0),#fff 70%) 100% 0,
radial-gradient(farthest-side at 0 50%,rgba(0,0,0,.18),rgba(0,0,0,0)),
radial-gradient(farthest-side at 100% 50%,rgba(0,0,0,.18),rgba(0,0,0,0)) 100% 0;
background-repeat:no-repeat;background-size:40px 100%,40px 100%,12px 100%,12px 100%;
background-attachment:local,local,scroll,scroll}
.banner .scroll{background:none}
table{border-collapse:collapse;font-size:.9em;min-width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.kv th{width:1%;background:none;color:#57606a;font-weight:500}
.ok{color:#1a7f37;font-weight:600}
.bad{color:#b42318;font-weight:600}
.warn{color:#9a6700;font-weight:600}
.ok,.bad,.warn{white-space:nowrap}
figure{margin:8px 0 14px;max-width:100%}
figure svg{display:block;width:100%;height:auto;max-width:600px}
figcaption{font-size:.85em;color:#57606a}
.legend{font-size:.85em;color:#57606a;margin:2px 0}
.sw{display:inline-block;width:.9em;height:.9em;border-radius:2px;vertical-align:-.1em;margin:0 .3em 0 .8em}
.sw:first-child{margin-left:0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(260px,100%),1fr));gap:10px}
.card{border:1px solid #d0d7de;border-radius:6px;padding:6px 8px;min-width:0}
.card svg{display:block;width:100%;height:auto;max-width:none}
.lbars{display:grid;grid-template-columns:fit-content(45%) minmax(3em,1fr) max-content;gap:2px 8px;
align-items:center;font-size:.85em}
.lbars .nm{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere;min-width:0}
.lbars .tr{position:relative;height:14px;background:#f6f8fa;border-radius:2px}
.lbars .b0,.lbars .b1{position:absolute;left:0;top:0;bottom:0;border-radius:2px}
.lbars .b0{background:#d0d7de}
.lbars .b1{background:#0969da;top:3px;bottom:3px}
.lbars .v{font-variant-numeric:tabular-nums;white-space:nowrap;text-align:right}
ul{margin:6px 0;padding-left:1.3em}
footer{margin-top:28px;font-size:.8em;color:#57606a}
@media (max-width:560px){body{font-size:14px;padding:0 8px 24px}.banner{padding:10px}
.banner .word{font-size:1.3em}th,td{padding:3px 6px}
.lbars{gap:2px 6px}
table.stack{min-width:0;width:100%}table.stack thead{display:none}
table.stack tr{display:block;padding:4px 0;border-bottom:1px solid rgba(0,0,0,.15)}
table.stack td{display:block;border:0;padding:1px 2px;text-align:right;white-space:normal}
table.stack td:first-child{text-align:left;font-weight:600}
table.stack td[data-label]::before{content:attr(data-label);float:left;margin-right:1em;color:#57606a;font-weight:400}
table.stack td:empty{display:none}}
@media print{body{padding:0;font-size:11pt}main{max-width:none}.scroll{overflow:visible;background:none}
table{font-size:9pt}h2{break-after:avoid}figure,.card,.banner,tr{break-inside:avoid}
.banner,.sw,.lbars .b0,.lbars .b1,th{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""


# -- formatting -------------------------------------------------------------------------------------

def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _num(v: Any, unit: str = "", digits: int = 4) -> str:
    """A number for people: 4 significant digits, thousands separators, M/G for counts; '-' when absent."""
    if v is None:
        return "&ndash;"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if not _is_num(v):
        return _e(v)
    if unit in ("", "count") and abs(v) >= 1e4:
        for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
            if abs(v) >= scale:
                return f"{v / scale:.{digits}g}{suffix}"
    if isinstance(v, int):
        s = f"{v:,}"
    else:
        s = f"{v:.{digits}g}"
    return f"{s} {unit}".rstrip() if unit and unit != "count" else s


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


def _f(v: float) -> str:
    """SVG coordinate: short and deterministic."""
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _axis(lo: float, hi: float, most: int = 5) -> tuple[float, float, list[float], Any]:
    """A value axis covering lo..hi with round ends: (start, end, ticks, tick formatter)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    step = _nice_step(hi - lo, most)
    a = math.floor(lo / step + 1e-9) * step
    b = math.ceil(hi / step - 1e-9) * step
    ticks = [a + step * i for i in range(int(round((b - a) / step)) + 1)]
    return a, b, ticks, _step_fmt(step)


def _x_ticks(ticks: list[float], x, y: float, fmt, size: float = 11, width: float = 10000.0) -> list[str]:
    """Tick labels centred under x(t), thinned until they keep apart and kept inside 0..width."""
    texts = [fmt(t) for t in ticks]
    xs = [x(t) for t in ticks]
    ws = [_tw(t, size) for t in texts]
    out = []
    for i in _spaced(xs, ws):
        cx = min(max(xs[i], ws[i] / 2 + 1), width - ws[i] / 2 - 1)
        out.append(_label(cx, y, texts[i], size, "middle"))
    return out


def _svg(w: int, h: int, body: str, label: str) -> str:
    # No xmlns: the HTML parser puts inline <svg> in the SVG namespace, and the page stays free of URLs.
    # width 100% and a viewBox: the chart scales to its box (a phone's width) and never widens the page.
    return (f'<svg viewBox="0 0 {w} {h}" width="100%" preserveAspectRatio="xMinYMin meet" role="img" '
            f'aria-label="{_e(label)}" font-family="system-ui,sans-serif" font-size="12">{body}</svg>')


# -- SVG labels that cannot collide ------------------------------------------------------------------
# Text width is estimated, not measured (no script): 0.6 x font size per character is a little wider than the
# average glyph of the sans-serif system fonts, so labels laid out with it keep apart in any of them.
CHAR_W = 0.6
# A white outline under a label drawn over lines keeps it legible.
HALO = ' stroke="#fff" stroke-width="3" stroke-linejoin="round" paint-order="stroke"'
ELLIPSIS = "\u2026"


def _tw(text: str, size: float) -> float:
    """Estimated width of `text` at font size `size`."""
    return CHAR_W * size * len(text)


def _fit(text: str, width: float, size: float) -> str:
    """`text`, cut to fit `width` at `size` with an ellipsis; '' when not even one character and the ellipsis fit."""
    if _tw(text, size) <= width + 1e-6:
        return text
    n = int(width / (CHAR_W * size)) - 1
    return text[:n].rstrip() + ELLIPSIS if n >= 1 else ""


def _label(x: float, y: float, text: str, size: float = 12, anchor: str = "start", fill: str = "#57606a",
           width: float | None = None, extra: str = "") -> str:
    """One SVG text. Cut to `width` (estimated) when given; a cut label keeps its full text in a <title> (the
    browser's tooltip), so nothing is lost, only folded away."""
    text = str(text)
    shown = text if width is None else _fit(text, width, size)
    if not shown:
        return ""
    a = "" if anchor == "start" else f' text-anchor="{anchor}"'
    el = (f'<text x="{_f(x)}" y="{_f(y)}"{a} font-size="{_f(size)}" fill="{fill}"{extra}>{_e(shown)}</text>')
    return f"<g><title>{_e(text)}</title>{el}</g>" if shown != text else el


def _spaced(positions: list[float], widths: list[float], gap: float = 6.0, keep_last: bool = True) -> list[int]:
    """Indices of the centred labels to draw, evenly thinned (every k-th) so that no two overlap; the last one is
    kept too when it fits (replacing its neighbour when it does not)."""
    n = len(positions)
    if n <= 1:
        return list(range(n))

    def clear(i: int, j: int) -> bool:
        return abs(positions[j] - positions[i]) >= (widths[i] + widths[j]) / 2 + gap

    for k in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000):
        idx = list(range(0, n, k))
        if all(clear(a, b) for a, b in zip(idx, idx[1:])):
            break
    else:
        idx = [0]
    if keep_last and idx[-1] != n - 1:
        if clear(idx[-1], n - 1):
            idx.append(n - 1)
        elif len(idx) > 1 and clear(idx[-2], n - 1):
            idx[-1] = n - 1
    return idx


def _nice_step(span: float, most: int) -> float:
    """A step on the 1-2-2.5-5 ladder giving at most `most` intervals over `span`."""
    if not (span > 0 and math.isfinite(span)):
        return 1.0
    raw = span / max(1, most)
    p = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * p >= raw * (1 - 1e-9):
            return m * p
    return 10 * p


def _step_fmt(step: float):
    """A formatter showing as many decimals as `step` needs (so 2.655 and 2.66 never both print as 2.66)."""
    if step >= 1e4:
        return lambda v: _num(v, digits=3)
    d = next((d for d in range(13) if abs(round(step, d) - step) <= step * 1e-6), 12)
    return lambda v: "0" if abs(v) < step * 1e-6 else f"{v:,.{d}f}"


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
            f'<p>{what}</p>{_compared(r)}{table}{_accuracy_line(r)}</div>')


def _accuracy_line(r: dict) -> str:
    """The accuracy change next to the verdict (the console summary's words), linking to the section."""
    from .summary import accuracy_text

    a = r.get("accuracy")
    try:
        text = accuracy_text(a) if isinstance(a, dict) else None
    except (TypeError, ValueError, KeyError):   # a hand-edited report: the section below still shows what it has
        text = None
    return f'<p><b>Accuracy:</b> <a href="#accuracy">{_e(text)}</a>.</p>' if text else ""


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


_PCTS = (("min_ms", "min"), ("median_ms", "median"), ("p90_ms", "p90"), ("p95_ms", "p95"), ("p99_ms", "p99"),
         ("max_ms", "max"))


def _latency_svg(series: list[tuple[str, str, dict]], limit: float | None) -> str:
    """One row per model: a min..max whisker, a box from median to p95, ticks at p90/p99, median bold."""
    # The axis ends just past p99: a single slow run (max) would otherwise squash the distribution into a line;
    # a clipped whisker ends in an arrow and says its value.
    values = [s.get(k) for _, _, s in series for k in ("p99_ms", "p95_ms", "median_ms") if _is_num(s.get(k))]
    vmax = max(values) * 1.15 if values else 1.0
    show_limit = _is_num(limit) and limit <= vmax * 1.5
    if show_limit:
        vmax = max(vmax, limit)
    _, vmax, ticks, fmt = _axis(0.0, vmax, 5)
    W, R, row, top = 480, 20, 50, 20
    L = max(48.0, min(140.0, 12 + max(_tw(str(n), 12) for n, _, _ in series)))
    H = top + row * len(series) + 30
    x = lambda v: L + (W - L - R) * v / vmax  # noqa: E731
    out = [f'<line x1="{_f(x(t))}" y1="{top - 4}" x2="{_f(x(t))}" y2="{H - 26}" stroke="#eaeef2"/>' for t in ticks]
    out += _x_ticks(ticks, x, H - 10, fmt, 11, W)
    # The unit sits left of the axis, under the row names, where no tick label goes.
    out.append(_label(L - 6 - _tw(fmt(ticks[0]), 11) / 2, H - 10, "ms", 11, "end"))
    if show_limit:  # under the boxes and labels
        out.append(f'<line x1="{_f(x(limit))}" y1="4" x2="{_f(x(limit))}" y2="{H - 26}" stroke="{MISSED}" '
                   f'stroke-dasharray="5 3" stroke-width="1.5"/>')
    for i, (name, color, s) in enumerate(series):
        cy = top + row * i + row / 2 + 6
        out.append(_label(L - 8, cy + 4, name, 12, "end", "#1f2328", width=L - 12))
        g = {k: s.get(k) for k, _ in _PCTS}
        clipped = _is_num(g["max_ms"]) and g["max_ms"] > vmax
        if clipped:
            g["max_ms"] = None
            xe = x(vmax)
            out.append(f'<path d="M{_f(xe)},{_f(cy)} l-7,-4 v8 z" fill="{color}"/>'
                       + _label(xe, cy + 17, f'max {_num(s.get("max_ms"))}', 10, "end"))
        if _is_num(g["min_ms"]):
            xe = x(vmax) if clipped else x(g["max_ms"]) if _is_num(g["max_ms"]) else x(g["min_ms"])
            out.append(f'<line x1="{_f(x(g["min_ms"]))}" y1="{_f(cy)}" x2="{_f(xe)}" y2="{_f(cy)}" '
                       f'stroke="{color}" stroke-width="1.5"/>')
        if _is_num(g["median_ms"]) and _is_num(g["p95_ms"]):
            out.append(f'<rect x="{_f(x(g["median_ms"]))}" y="{_f(cy - 9)}" '
                       f'width="{_f(max(1.0, x(g["p95_ms"]) - x(g["median_ms"])))}" height="18" fill="{color}" '
                       f'fill-opacity=".25" stroke="{color}"/>')
        for k, w, hgt in (("p90_ms", 1.5, 9), ("p99_ms", 1.5, 9), ("median_ms", 3.5, 12), ("min_ms", 1.5, 5),
                          ("max_ms", 1.5, 5)):
            if _is_num(g[k]):
                out.append(f'<line x1="{_f(x(g[k]))}" y1="{_f(cy - hgt)}" x2="{_f(x(g[k]))}" y2="{_f(cy + hgt)}" '
                           f'stroke="{color}" stroke-width="{w}"/>')
        if _is_num(g["median_ms"]):
            t = _num(g["median_ms"])
            cx = min(max(x(g["median_ms"]), L + _tw(t, 11) / 2), W - _tw(t, 11) / 2 - 1)
            out.append(_label(cx, cy - 15, t, 11, "middle", "#1f2328", extra=HALO))
    if show_limit:
        # The budget's label has the band above the rows to itself (the medians' labels are inside the rows).
        text = f"budget {_num(limit)} ms"
        xl = x(limit)
        right = xl - 4 - _tw(text, 11) >= 0
        out.append(_label(xl - 4 if right else xl + 4, 12, text, 11, "end" if right else "start", MISSED,
                          extra=HALO))
    return _svg(W, H, "".join(out), "latency distribution, original and final")


def _bars_svg(items: list[tuple[str, float, str, str]], unit: str, label: str, limit: float | None = None) -> str:
    """Simple horizontal bars: (name, value, colour, value text). Long names are cut (full text in a tooltip)."""
    vals = [v for _, v, _, _ in items if _is_num(v)]
    vmax = max(vals + ([limit] if _is_num(limit) and vals and limit <= max(vals) * 1.5 else [])) if vals else 1.0
    _, vmax, ticks, fmt = _axis(0.0, vmax if vmax > 0 else 1.0, 5)
    W, row = 480, 26
    L = max(60.0, min(W * 0.4, 12 + max([_tw(str(n), 12) for n, _, _, _ in items] or [0])))
    R = max(30.0, min(W * 0.25, 10 + max([_tw(str(t), 12) for _, _, _, t in items] or [0])))
    H = 10 + row * len(items) + 24
    x = lambda v: L + (W - L - R) * v / vmax  # noqa: E731
    out = [f'<line x1="{_f(x(t))}" y1="6" x2="{_f(x(t))}" y2="{H - 22}" stroke="#eaeef2"/>' for t in ticks]
    out += _x_ticks(ticks, x, H - 8, fmt, 11, W - (_tw(unit, 11) + 10 if unit else 0))
    for i, (name, v, color, text) in enumerate(items):
        y = 10 + row * i
        out.append(_label(L - 8, y + 14, name, 12, "end", "#1f2328", width=L - 12))
        if _is_num(v):
            out.append(f'<rect x="{_f(L)}" y="{y + 2}" width="{_f(max(0.5, x(v) - L))}" height="{row - 8}" '
                       f'fill="{color}"/>' + _label(x(v) + 4, y + 14, text, 12, fill="#1f2328",
                                                    width=W - x(v) - 6))
    if _is_num(limit) and limit <= vmax:
        out.append(f'<line x1="{_f(x(limit))}" y1="4" x2="{_f(x(limit))}" y2="{H - 22}" stroke="{MISSED}" '
                   f'stroke-dasharray="5 3" stroke-width="1.5"/>')
    if unit:
        out.append(_label(W - 4, H - 8, unit, 11, "end"))
    return _svg(W, H, "".join(out), label)


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
        rows.append([str(i), _e(x.get("selection")), _e(x.get("binding")), _num(x.get("channels_removed")),
                     _num(m.get("macs")), _num(x.get("predicted_latency_ms")), _num(meas[i - 1]),
                     _num(x.get("measured_over_predicted"), digits=3),
                     '<span class="ok">&#10004; yes</span>' if met else ('<span class="bad">&#10008; no</span>'
                                                                         if met is False else "&ndash;")])
    parts.append(_table(["Round", "Selection", "Binding", "Channels removed", "MACs", "Predicted ms", "Measured ms",
                         "Measured / predicted", "Met"], rows, {0, 3, 4, 5, 6, 7}))
    return _section("rounds", "Pruning rounds: predicted vs measured latency", _criterion_line(r) + "".join(parts))


def _rounds_svg(pred: list, meas: list, limit: Any) -> str:
    vals = [v for v in pred + meas if _is_num(v)]
    hi = max(vals)
    show_limit = _is_num(limit) and limit <= hi * 1.5
    lo = min(vals + ([limit] if show_limit else []))
    hi = max(vals + ([limit] if show_limit else []))
    # Latency moves by a few percent per round; a zero-based axis would flatten it, so zoom to the data.
    pad = (hi - lo) * 0.08 or hi * 0.05 or 1.0
    lo, hi, yt, fmt = _axis(max(0.0, lo - pad), hi + pad, 5)
    n = len(pred)
    W, R, T, B = 480, 14, 22, 40
    L = max(40.0, 12 + max(_tw(fmt(v), 11) for v in yt))
    H = 230
    x = lambda i: L + (W - L - R) * (i / max(1, n - 1))  # noqa: E731
    y = lambda v: T + (H - T - B) * (1 - (v - lo) / (hi - lo))  # noqa: E731
    out = []
    for v in yt:
        out.append(f'<line x1="{_f(L)}" y1="{_f(y(v))}" x2="{W - R}" y2="{_f(y(v))}" stroke="#eaeef2"/>'
                   + _label(L - 6, y(v) + 4, fmt(v), 11, "end"))
    # The unit heads the value axis; the round numbers below are thinned to every k-th when they would touch.
    out.append(_label(L - 6, 11, "ms", 11, "end"))
    names = ["orig." if i == 0 else str(i) for i in range(n)]
    for i in _spaced([x(i) for i in range(n)], [_tw(t, 11) for t in names]):
        out.append(_label(x(i), H - B + 16, names[i], 11, "middle"))
    out.append(_label((L + W - R) / 2, H - 4, "round", 11, "middle"))
    if show_limit:
        out.append(f'<line x1="{_f(L)}" y1="{_f(y(limit))}" x2="{W - R}" y2="{_f(y(limit))}" stroke="{MISSED}" '
                   f'stroke-dasharray="5 3"/>')
    for vals_, color, dash in ((pred, PRED, ' stroke-dasharray="6 3"'), (meas, FINAL, "")):
        pts = [(x(i), y(v)) for i, v in enumerate(vals_) if _is_num(v)]
        if len(pts) > 1:
            out.append(f'<polyline points="{" ".join(f"{_f(a)},{_f(b)}" for a, b in pts)}" fill="none" '
                       f'stroke="{color}" stroke-width="2"{dash}/>')
        r = 3.5 if n <= 40 else 2.5 if n <= 120 else 0
        if r:
            out.extend(f'<circle cx="{_f(a)}" cy="{_f(b)}" r="{r}" fill="{color}"/>' for a, b in pts)
    if show_limit:  # over the lines
        out.append(_label(W - R, y(limit) - 4, "budget", 11, "end", MISSED, extra=HALO))
    return _svg(W, H, "".join(out), "predicted and measured latency per pruning round")


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
            ("Labels from", _e(a.get("labels_from")) if a.get("labels_from") else None)]


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


def _curve_svg(name: str, d: dict) -> str:
    curve = [v for v in d.get("curve") or [] if _is_num(v)]
    keep = d.get("keep")
    W, H, R, T, B = 300, 150, 10, 24, 26
    lo, hi, yt, fmt = _axis(min(curve + [0.0]), max(curve + [1e-12]), 3)
    L = max(28.0, 8 + max(_tw(fmt(v), 10) for v in yt))
    n = len(curve)
    x = lambda i: L + (W - L - R) * i / max(1, n - 1)  # noqa: E731
    y = lambda v: T + (H - T - B) * (1 - (v - lo) / (hi - lo))  # noqa: E731
    # The layer's name heads the card: cut to the card's width, the full name in the tooltip.
    # (Bold glyphs run about a tenth wider: the name is fitted to a tenth less room.)
    out = [_label(4, 14, name, 12, fill="#1f2328", width=(W - 8) / 1.1, extra=' font-weight="600"')]
    for v in yt:
        out.append(f'<line x1="{_f(L)}" y1="{_f(y(v))}" x2="{W - R}" y2="{_f(y(v))}" stroke="#eaeef2"/>'
                   + _label(L - 4, y(v) + 4, fmt(v), 10, "end"))
    if n > 1:
        out.append(f'<polyline points="{" ".join(f"{_f(x(i))},{_f(y(v))}" for i, v in enumerate(curve))}" '
                   f'fill="none" stroke="{FINAL}" stroke-width="2"/>')
    if isinstance(keep, int) and not isinstance(keep, bool) and 0 <= keep < n:
        out.append(f'<line x1="{_f(x(keep))}" y1="{T - 2}" x2="{_f(x(keep))}" y2="{H - B}" stroke="{MISSED}" '
                   f'stroke-dasharray="4 3" stroke-width="1.5"/><circle cx="{_f(x(keep))}" cy="{_f(y(curve[keep]))}" '
                   f'r="3.5" fill="{MISSED}"/>')
        text = f"keep {keep}"
        right = x(keep) + 4 + _tw(text, 11) <= W - R
        out.append(_label(x(keep) + 4 if right else x(keep) - 4, T + 10, text, 11, "start" if right else "end",
                          MISSED, extra=HALO))
    last = f"{n - 1} channels chosen"
    out.append(_label(L, H - 8, "0", 10) + _label(W - R, H - 8, last, 10, "end", width=W - R - L - 16))
    return _svg(W, H, "".join(out), f"CMI curve of {name}")


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
    body = "".join([
        f"<h1>{_e(title)}</h1>",
        _banner(r),
        _summary(r),
        _latency(r),
        _layers(r),
        _rounds(r),
        _accuracy(r),
        _curves(r),
        _export(r),
        _timings(r),
        _environment(r),
        _artifacts(r),
        _notes(r),
        f'<footer>report.json schema {_e(r.get("schema_version"))}'
        f'{" &middot; edge-compress " + _e(_get(r, "environment", "versions", "edge-compress")) if _get(r, "environment", "versions", "edge-compress") else ""}'
        "</footer>",
    ])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{_e(verdict)} &middot; {_e(title)}</title><style>{_CSS}</style></head>"
            f"<body><main>{body}</main></body></html>\n")
