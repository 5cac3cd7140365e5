"""Small server-side SVG charts for the result pages: no JavaScript, no vendored library, readable as they are."""
from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from html import escape

from django.utils.safestring import SafeString, mark_safe

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 760, 260, 64, 16, 16, 28
COLORS = ("#5aa9ff", "#2ecc71", "#f4c430", "#ff4d4f", "#c792ea")


def _x(value: object) -> float:
    return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else float(value)  # type: ignore[arg-type]


def _scale(lo: float, hi: float, a: float, b: float):  # type: ignore[no-untyped-def]
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _frame(y_lo: float, y_hi: float, unit: str, body: str, legend: Sequence[tuple[str, str]]) -> SafeString:
    ticks = "".join(
        f'<text x="{PAD_L - 6}" y="{y:.1f}" text-anchor="end" class="tick">{v:,.0f}</text>'
        f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
        for v, y in ((y_lo + (y_hi - y_lo) * k / 4, H - PAD_B - (H - PAD_T - PAD_B) * k / 4) for k in range(5)))
    keys = "".join(f'<text x="{PAD_L + 8 + 150 * i}" y="{PAD_T + 10}" class="key" style="fill: {color}">■ {escape(name)}</text>'
                   for i, (name, color) in enumerate(legend))
    return mark_safe(  # noqa: S308  every text inside is escaped above
        f'<svg viewBox="0 0 {W} {H}" class="chart" role="img"><text x="4" y="{H - 6}" class="tick">{escape(unit)}'
        f"</text>{ticks}{body}{keys}</svg>")


def line_chart(series: Sequence[tuple[str, Sequence[tuple[object, float]]]], unit: str) -> SafeString:
    """Lines over time (ISO timestamps) or any numeric x; `series` = [(name, [(x, y), ...]), ...]."""
    points = [[(_x(x), float(y)) for x, y in data] for _, data in series]
    flat = [p for line in points for p in line]
    if not flat:
        return mark_safe('<p class="muted">no data</p>')
    xs, ys = [p[0] for p in flat], [p[1] for p in flat]
    sx = _scale(min(xs), max(xs), PAD_L, W - PAD_R)
    sy = _scale(min(ys), max(ys), H - PAD_B, PAD_T)
    body = "".join(
        f'<polyline fill="none" stroke="{COLORS[i % len(COLORS)]}" stroke-width="1.6" points="'
        + " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line) + '"/>'
        for i, line in enumerate(points))
    return _frame(min(ys), max(ys), unit, body, [(name, COLORS[i % len(COLORS)]) for i, (name, _) in enumerate(series)])


def price_with_hedges(prices: Sequence[tuple[object, float]], hedges: Sequence[Sequence[object]]) -> SafeString:
    """The underlying's mid with every hedge fill marked: green buys, red sells."""
    chart = line_chart([("mid", prices)], "USD")
    if not prices or not hedges:
        return chart
    xs = [_x(x) for x, _ in prices]
    ys = [float(y) for _, y in prices]
    sx = _scale(min(xs), max(xs), PAD_L, W - PAD_R)
    sy = _scale(min(ys), max(ys), H - PAD_B, PAD_T)
    marks = "".join(
        f'<circle cx="{sx(_x(ts)):.1f}" cy="{sy(float(price)):.1f}" r="3" '  # type: ignore[arg-type]
        f'fill="{"#2ecc71" if float(qty) > 0 else "#ff4d4f"}"/>'  # type: ignore[arg-type]
        for ts, price, qty in hedges[:2000])
    return mark_safe(str(chart).replace("</svg>", marks + "</svg>"))  # noqa: S308  numbers only


def bar_chart(items: Sequence[tuple[str, float]], unit: str) -> SafeString:
    if not items:
        return mark_safe('<p class="muted">none</p>')
    top = max(abs(v) for _, v in items) or 1.0
    rows = "".join(
        f'<div class="bar-row"><span class="bar-label">{escape(label)}</span>'
        f'<span class="bar {"neg" if value < 0 else ""}" style="width:{abs(value) / top * 70:.1f}%"></span>'
        f'<span class="bar-value">{value:,.2f} {escape(unit)}</span></div>'
        for label, value in items)
    return mark_safe(f'<div class="bars">{rows}</div>')  # noqa: S308  escaped above


def value_label(value: object) -> str:
    """A parameter value as an axis label: hashable text, lists and mappings as compact JSON."""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def _label_order(label: str) -> tuple[int, float, str]:
    """Numbers in numeric order first, then any other text in text order."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def heat_map(x_name: str, y_name: str, cells: dict[tuple[str, str], float], unit: str) -> SafeString:
    """Objective over two parameters of a sweep: one cell per (x, y) pair of value labels (`value_label`), greener
    is better."""
    if not cells:
        return mark_safe('<p class="muted">the sweep varies fewer than two parameters</p>')
    xs = sorted({k[0] for k in cells}, key=_label_order)
    ys = sorted({k[1] for k in cells}, key=_label_order)
    lo, hi = min(cells.values()), max(cells.values())
    shade = _scale(lo, hi, 0.0, 1.0)
    head = "".join(f"<th>{escape(x)}</th>" for x in xs)
    rows = ""
    for y in ys:
        row = ""
        for x in xs:
            value = cells.get((x, y))
            if value is None:
                row += "<td></td>"
                continue
            t = shade(value)
            row += (f'<td style="background: rgba({int(255 * (1 - t))}, {int(180 * t + 60)}, 90, .55)">'
                    f"{value:,.1f}</td>")
        rows += f"<tr><th>{escape(y)}</th>{row}</tr>"
    return mark_safe(  # noqa: S308  escaped above
        f'<table class="heat"><caption>{escape(unit)}: rows {escape(y_name)}, columns {escape(x_name)}</caption>'
        f"<tr><th></th>{head}</tr>{rows}</table>")


def histogram(edges: Sequence[float], counts: Sequence[int], x_unit: str, y_unit: str) -> SafeString:
    """Counts per bin as bars between their edges (`len(edges) == len(counts) + 1`): bins below zero red, above
    green, one that holds zero grey; the x axis labelled at its ends and at zero, in `x_unit`."""
    if not counts:
        return mark_safe('<p class="muted">no data</p>')
    lo, hi = float(edges[0]), float(edges[-1])
    if hi == lo:  # every value the same: one bar a unit wide around it
        lo, hi = lo - 0.5, hi + 0.5
        edges = [lo, hi]
    top = max(4, -(-max(counts) // 4) * 4)  # a multiple of 4: the frame's five ticks fall on whole counts
    sx = _scale(lo, hi, PAD_L, W - PAD_R)
    sy = _scale(0.0, float(top), H - PAD_B, PAD_T)
    bars = ""
    for left, right, count in zip(edges[:-1], edges[1:], counts, strict=True):
        color = "#ff4d4f" if right <= 0 else "#2ecc71" if left >= 0 else "#9aa4b2"
        x0, x1, y = sx(float(left)), sx(float(right)), sy(float(count))
        bars += (f'<rect x="{x0 + 0.5:.1f}" y="{y:.1f}" width="{max(x1 - x0 - 1.0, 1.0):.1f}" '
                 f'height="{H - PAD_B - y:.1f}" fill="{color}"><title>{float(left):,.2f} to {float(right):,.2f} '
                 f"{escape(x_unit)}, {escape(y_unit)}: {count}</title></rect>")
    marks = [(lo, "start"), (hi, "end")] + ([(0.0, "middle")] if lo < 0.0 < hi else [])
    labels = "".join(f'<text x="{sx(v):.1f}" y="{H - PAD_B + 12}" text-anchor="{anchor}" class="tick">'
                     f"{v:,.0f} {escape(x_unit)}</text>" for v, anchor in marks)
    return _frame(0.0, float(top), y_unit, bars + labels, [])
