"""Dependency-free SVG charts rendered on the server: they work without JavaScript, and a
fixed viewBox keeps the page from jumping while the live region refreshes.

`line_chart` draws one polyline per series over rounds; `stacked_bars` splits each round's
time into site training and platform overhead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Any

from markupsafe import Markup

WIDTH, HEIGHT = 360, 200
PAD_L, PAD_R, PAD_T, PAD_B = 46, 10, 10, 26
PALETTE = ("#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d")
GLOBAL_COLOR = "#111827"


@dataclass
class Series:
    name: str
    points: list[tuple[int, float]]  # (round, value); NaN/None already removed
    color: str = ""
    dashed: bool = False


def _ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.ceil(lo / step) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _frame(title: str, body: list[str], legend: list[tuple[str, str, bool]]) -> Markup:
    items = "".join(
        f'<li><span class="swatch{" dashed" if dashed else ""}" style="--c:{color}"></span>'
        f"{escape(name)}</li>"
        for name, color, dashed in legend
    )
    svg = (
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-label="{escape(title)}" preserveAspectRatio="xMidYMid meet">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )
    return Markup(
        f'<figure class="chart"><figcaption>{escape(title)}</figcaption>{svg}'
        f'<ul class="legend">{items}</ul></figure>'
    )


def _axes(x_max: int, y_lo: float, y_hi: float, x_pad: float = 0.0) -> tuple[list[str], Any, Any]:
    """Axes, grid and ticks; `x_pad` (in rounds) leaves room for bars at both ends."""
    plot_w, plot_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B
    span = max(x_max, 1) + 2 * x_pad

    def sx(x: float) -> float:
        return PAD_L + (x + x_pad) / span * plot_w

    def sy(y: float) -> float:
        return PAD_T + plot_h - (y - y_lo) / (y_hi - y_lo) * plot_h

    out = [
        f'<line class="axis" x1="{PAD_L}" y1="{PAD_T + plot_h}" x2="{WIDTH - PAD_R}" '
        f'y2="{PAD_T + plot_h}"/>'
    ]
    for tick in _ticks(y_lo, y_hi):
        y = sy(tick)
        out.append(
            f'<line class="grid" x1="{PAD_L}" y1="{y:.1f}" x2="{WIDTH - PAD_R}" y2="{y:.1f}"/>'
        )
        out.append(
            f'<text class="tick" x="{PAD_L - 4}" y="{y + 3:.1f}" text-anchor="end">{_fmt(tick)}</text>'
        )
    step = max(1, math.ceil((x_max + 1) / 10))
    for x in range(0, x_max + 1, step):
        out.append(
            f'<text class="tick" x="{sx(x):.1f}" y="{HEIGHT - 8}" text-anchor="middle">{x}</text>'
        )
    return out, sx, sy


def line_chart(title: str, series: list[Series], num_rounds: int) -> Markup:
    """Series over rounds 0..num_rounds-1; an empty chart keeps its size ("no data yet")."""
    values = [v for s in series for _, v in s.points]
    x_max = max(num_rounds - 1, 1)
    if not values:
        body, _, _ = _axes(x_max, 0.0, 1.0)
        body.append(
            f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">'
            "no data yet</text>"
        )
        return _frame(title, body, [])
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 if lo else -0.5, hi + 0.5 if hi else 0.5
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad
    body, sx, sy = _axes(x_max, lo, hi)
    legend = []
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s.points)
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        body.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{pts}"/>'
        )
        for x, y in s.points:
            body.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}">'
                f"<title>{escape(s.name)} round {x}: {_fmt(y)}</title></circle>"
            )
        legend.append((s.name, color, s.dashed))
    return _frame(title, body, legend)


def stacked_bars(title: str, rows: list[tuple[int, float, float]], num_rounds: int) -> Markup:
    """Per round: (round, training seconds, overhead seconds)."""
    x_max = max(num_rounds - 1, 1)
    total = max((t + o for _, t, o in rows), default=0.0)
    hi = total * 1.1 if total > 0 else 1.0
    body, sx, sy = _axes(x_max, 0.0, hi, x_pad=0.5)
    plot_w = WIDTH - PAD_L - PAD_R
    bar_w = min(28.0, plot_w / (x_max + 1) * 0.6)
    colors = (PALETTE[0], PALETTE[1])
    for rnd, train, overhead in rows:
        x = sx(rnd) - bar_w / 2
        base = sy(0.0)
        top_train = sy(train)
        top_all = sy(train + overhead)
        body.append(
            f'<rect x="{x:.1f}" y="{top_train:.1f}" width="{bar_w:.1f}" '
            f'height="{base - top_train:.1f}" fill="{colors[0]}"><title>round {rnd}: '
            f"site training {train:.2f} s</title></rect>"
        )
        body.append(
            f'<rect x="{x:.1f}" y="{top_all:.1f}" width="{bar_w:.1f}" '
            f'height="{top_train - top_all:.1f}" fill="{colors[1]}"><title>round {rnd}: '
            f"platform overhead {overhead:.2f} s</title></rect>"
        )
    if not rows:
        body.append(
            f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">'
            "no finished round yet</text>"
        )
    legend = [
        ("site training (slowest site)", colors[0], False),
        ("platform overhead", colors[1], False),
    ]
    return _frame(title, body, legend)
