"""Small HTML helpers shared by the report's sections; every piece of data goes through ``html.escape``."""

from __future__ import annotations

from pipeline.framework.summary import seconds  # noqa: F401 - re-exported for the page

from html import escape
from typing import Iterable


def esc(value) -> str:
    """Any value as escaped HTML text."""
    return escape("" if value is None else str(value))


def number(value) -> str:
    """A count with thousands separators; ``-`` when absent; other values as text."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return str(value)


def percent(part, whole) -> str:
    """``part`` as a percentage of ``whole``, or an empty string when that means nothing."""
    try:
        return f"{100.0 * part / whole:.1f}%" if whole else ""
    except TypeError:
        return ""


def state_badge(state: str) -> str:
    """A coloured tag for a stage state (done, stale, interrupted, missing, not built, unreadable)."""
    css = "state-" + "-".join(state.split())
    return f'<span class="state {esc(css)}">{esc(state)}</span>'


def note(text: str, css: str = "note") -> str:
    """A muted paragraph saying why something is not shown."""
    return f'<p class="{css}">{esc(text)}</p>'


def table(header: Iterable[str], rows: Iterable[Iterable[str]], css: str = "", numeric: Iterable[int] = ()) -> str:
    """A table; cells are HTML already (escape data with :func:`esc`); ``numeric`` columns align right."""
    right = set(numeric)
    head = "".join(f'<th{" class=num" if i in right else ""}>{esc(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if i in right else ""}>{cell}</td>' for i, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    cls = f' class="{esc(css)}"' if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def key_values(items: dict) -> str:
    """A two-column table of counters or settings."""
    return table(("name", "value"), ((esc(k), esc(number(v))) for k, v in items.items()), css="kv", numeric=(1,))
