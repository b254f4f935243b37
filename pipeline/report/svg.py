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
