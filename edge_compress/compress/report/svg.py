"""The SVG charts of report.html (latency distribution, bars against a limit, pruning rounds, criterion curves),
drawn as inline markup so the page stays one offline file. Every text from a report passes through `_e`."""
from __future__ import annotations

import math
from typing import Any

from .fmt import FINAL, MISSED, PRED, _e, _is_num, _num

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


CHAR_W = 0.6


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
