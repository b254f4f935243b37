"""Human-readable summaries: one screen at the end of each stage, and the --status table.

What the method's outcome lines add below the table (execution pass rate, pass@1) is the report's:
:func:`pipeline.report.text.run_summary`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable


def seconds(value: float | None) -> str:
    """Format a duration as 12.3s / 4m05s / 1h02m."""
    if value is None:
        return "-"
    value = float(value)
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{int(value // 3600)}h{int(value % 3600 // 60):02d}m"


def stage_summary(manifest: dict, folder: Path) -> str:
    """A short report of one finished stage: rows in and out, drops by reason, counters, time."""
    lines = [
        f"== {manifest['stage']} done: {manifest['rows_in']} in -> {manifest['rows_out']} out "
        f"in {seconds(manifest.get('wall_seconds'))} ==",
    ]
    dropped = manifest.get("dropped") or {}
    if dropped:
        total = sum(dropped.values())
        lines.append(f"   dropped {total}:")
        for reason, count in sorted(dropped.items(), key=lambda kv: -kv[1]):
            lines.append(f"     {reason:<28} {count:>9}")
    stats = manifest.get("stats") or {}
    if stats:
        lines.append("   counters:")
        for key, value in stats.items():
            lines.append(f"     {key:<28} {value:>9}")
    lines.append(f"   output: {folder}")
    return "\n".join(lines)


def status_table(states: Iterable) -> str:
    """The --status table: every stage with its state, rows, drops and time."""
    header = ("stage", "state", "rows in", "rows out", "dropped", "time", "note")
    rows = []
    for st in states:
        m = st.manifest or {}
        dropped = m.get("dropped") or {}
        top = ", ".join(f"{k}={v}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1]))
        note = st.why
        if top:
            note = (note + "; " if note else "") + top
        rows.append(
            (
                st.name,
                st.state,
                str(m.get("rows_in", "-")),
                str(m.get("rows_out", "-")),
                str(sum(dropped.values())) if m else "-",
                seconds(m.get("wall_seconds")) if m else "-",
                note,
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = []
    for r in [header, *rows]:
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())
        if r is header:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
