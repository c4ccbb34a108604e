"""Charts drawn on the server as SVG: no JavaScript, no library, nothing from a CDN.

:func:`slot_chart` draws a day's sales per 15 minutes: the first series as bars, the second
(the same weekday last week) as a line over them, with hour ticks and a yuan scale. The SVG
has a title and a description for screen readers, uses only attributes (no inline style, so
the pages' Content-Security-Policy holds) and scales to the width of a phone.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from server.web.dashboard_data import SLOT_MS, SLOTS_PER_DAY, Series
from shared.money import format_fen

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 16, 36
DEFAULT_FIRST, DEFAULT_LAST = 6 * 4, 21 * 4  # 06:00 to 21:00 unless sales fall outside
SLOTS_PER_HOUR = 3_600_000 // SLOT_MS


def _span(series: Sequence[Series]) -> tuple[int, int]:
    used = [i for s in series for i, v in enumerate(s.amounts_fen) if v]
    first = min([DEFAULT_FIRST, *used])
    last = max([DEFAULT_LAST, *(i + 1 for i in used)])
    return first - first % SLOTS_PER_HOUR, min(SLOTS_PER_DAY, -(-last // SLOTS_PER_HOUR) * SLOTS_PER_HOUR)


def _nice_top(value: int) -> int:
    """A round scale top (fen) at or above ``value``: 1, 2 or 5 times a power of ten yuan."""
    top = 100
    while True:
        for m in (1, 2, 5):
            if m * top >= value:
                return m * top
        top *= 10


def slot_chart(series: Sequence[Series], title: str, chart_id: str = "chart") -> Markup:
    first, last = _span(series)
    n = last - first
    peak = max([0, *(v for s in series for v in s.amounts_fen[first:last] if v)])
    top = _nice_top(max(peak, 1))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / n

    def y(fen: int) -> float:
        return TOP + plot_h - plot_h * fen / top

    parts = [
        f'<svg id="{chart_id}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" preserveAspectRatio="xMidYMid meet">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">'
        + escape("；".join(f"{s.label}合计 {format_fen(sum(v or 0 for v in s.amounts_fen))}" for s in series))
        + "</desc>",
    ]
    for k in range(5):  # the scale: 0, ¼, ½, ¾, top
        fen = top * k // 4
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(fen):.1f}" y2="{y(fen):.1f}"/>'
            f'<text class="axis" x="{LEFT - 6}" y="{y(fen) + 4:.1f}" text-anchor="end">'
            f"{escape(format_fen(fen))}</text>"
        )
    for slot in range(first, last + 1, SLOTS_PER_HOUR * (2 if n > 48 else 1)):
        x = LEFT + (slot - first) * step
        parts.append(
            f'<text class="axis" x="{x:.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">'
            f"{slot // SLOTS_PER_HOUR:02d}:00</text>"
        )
    if series:
        for i, v in enumerate(series[0].amounts_fen[first:last]):
            if v:
                h = plot_h * v / top
                parts.append(
                    f'<rect class="bar" x="{LEFT + i * step + 1:.1f}" y="{TOP + plot_h - h:.1f}" '
                    f'width="{max(step - 2, 1):.1f}" height="{h:.1f}"/>'
                )
    for s in series[1:]:
        points = [
            f"{LEFT + (i + 0.5) * step:.1f},{y(v or 0):.1f}"
            for i, v in enumerate(s.amounts_fen[first:last])
            if v is not None
        ]
        if points:
            parts.append(f'<polyline class="line" points="{" ".join(points)}"/>')
    parts.append(
        f'<line class="axis-line" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}"/>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  # built from numbers and escaped text only
