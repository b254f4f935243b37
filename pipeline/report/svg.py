"""Inline SVG charts for the run report, drawn by hand (no JavaScript, no library).

Only one shape is needed: horizontal bars with a label on the left and the
value on the right, which reads well for funnels, status counts and pass@1.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

CHAR_WIDTH = 7.0
"""Approximate width of one character of the report's 12px chart font, for laying out labels."""


@dataclass
class Bar:
    """One bar: a label, a value (None draws no bar), its colour and the text shown after it."""

    label: str
    value: float | None
    color: str = "#4c78a8"
    text: str = ""
    """Shown right of the bar; defaults to the value itself."""


def _text_width(text: str) -> float:
    """Estimated width in pixels of ``text`` in the chart font."""
    return len(text) * CHAR_WIDTH


def hbar_chart(bars: list[Bar], *, title: str, width: int = 720, scale_max: float | None = None,
               bar_height: int = 22, gap: int = 8) -> str:
    """An inline ``<svg>`` horizontal bar chart; bars scale to ``scale_max`` (default: the largest value)."""
    label_w = min(240.0, max((_text_width(b.label) for b in bars), default=0.0) + 16)
    texts = [b.text or (_number(b.value) if b.value is not None else "") for b in bars]
    text_w = min(260.0, max((_text_width(t) for t in texts), default=0.0) + 12)
    plot_w = max(80.0, width - label_w - text_w)
    top = max([b.value for b in bars if b.value is not None], default=0.0)
    scale = scale_max if scale_max else top
    height = len(bars) * (bar_height + gap) + gap
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (bar, text) in enumerate(zip(bars, texts)):
        y = gap + i * (bar_height + gap)
        mid = y + bar_height / 2 + 4
        parts.append(f'<text class="label" x="{label_w - 8:.0f}" y="{mid:.0f}" text-anchor="end">{escape(bar.label)}</text>')
        bar_w = 0.0
        if bar.value is not None and scale > 0:
            bar_w = max(2.0, plot_w * min(bar.value, scale) / scale) if bar.value > 0 else 0.0
            parts.append(
                f'<rect x="{label_w:.0f}" y="{y}" width="{bar_w:.1f}" height="{bar_height}" rx="3" '
                f'fill="{escape(bar.color)}"><title>{escape(bar.label)}: {escape(text)}</title></rect>'
            )
        css = "value" if bar.value is not None else "value muted"
        parts.append(f'<text class="{css}" x="{label_w + bar_w + 6:.0f}" y="{mid:.0f}">{escape(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _number(value: float) -> str:
    """A count with thousands separators, or a short decimal."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3g}"


@dataclass
class Series:
    """One line of a line chart: a label, a colour, and (x, y) points."""

    label: str
    color: str
    points: list[tuple[float, float]]


def line_chart(series: list[Series], *, title: str, x_label: str, y_label: str, plot_width: int = 360,
               height: int = 260, y_max: float = 100.0) -> str:
    """An inline ``<svg>`` line chart with dots, x ticks at the points' x values, and a legend on the right."""
    left, top, bottom = 48.0, 16.0, 40.0
    right = 40 + max((_text_width(s.label) for s in series), default=0.0)
    width = round(left + plot_width + right)
    xs = sorted({x for s in series for x, _ in s.points})
    lo, hi = (xs[0], xs[-1]) if xs else (0.0, 1.0)
    span = (hi - lo) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + plot_w * (x - lo) / span if len(xs) > 1 else left + plot_w / 2

    def py(y: float) -> float:
        return top + plot_h * (1 - min(max(y, 0.0), y_max) / y_max)

    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#999"/>',
    ]
    for tick in (0.0, y_max / 2, y_max):
        parts.append(f'<text class="label" x="{left - 6}" y="{py(tick) + 4:.0f}" text-anchor="end">{_number(tick)}</text>')
    for x in xs:
        parts.append(f'<text class="label" x="{px(x):.0f}" y="{top + plot_h + 16}" text-anchor="middle">{_number(x)}</text>')
    parts.append(f'<text class="label" x="{left + plot_w / 2:.0f}" y="{height - 6}" text-anchor="middle">'
                 f'{escape(x_label)}</text>')
    parts.append(f'<text class="label" x="12" y="{top + plot_h / 2:.0f}" transform="rotate(-90 12 {top + plot_h / 2:.0f})" '
                 f'text-anchor="middle">{escape(y_label)}</text>')
    for i, s in enumerate(series):
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(s.points))
        parts.append(f'<polyline fill="none" stroke="{escape(s.color)}" stroke-width="2" points="{points}"/>')
        for x, y in s.points:
            parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{escape(s.color)}">'
                         f'<title>{escape(s.label)}: pass@{_number(x)} = {y:.1f}</title></circle>')
        legend_y = top + 14 + 18 * i
        parts.append(f'<rect x="{left + plot_w + 14}" y="{legend_y - 9}" width="10" height="10" fill="{escape(s.color)}"/>'
                     f'<text class="label" x="{left + plot_w + 30}" y="{legend_y}">{escape(s.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
