"""Escaping and numbers for report.html: what the page and its SVG charts both print."""
from __future__ import annotations

import html
import math
from typing import Any

MET, MISSED, BAD = "#1a7f37", "#b42318", "#9a6700"
ORIG, FINAL, PRED = "#8c959f", "#0969da", "#bf8700"


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
