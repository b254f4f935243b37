"""Human-readable summaries: one screen at the end of each stage, and the --status table."""

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


def outcome_lines(states: Iterable) -> list[str]:
    """Below the table: the pass rate in execution and pass@1 of each evaluated model, when known."""
    by_name = {st.name: st.manifest or {} for st in states}
    lines = []
    stats = by_name.get("execute", {}).get("stats") or {}
    statuses = {k[len("status_"):]: v for k, v in stats.items() if k.startswith("status_")}
    if statuses:
        total = sum(statuses.values())
        rest = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items(), key=lambda kv: -kv[1]) if k != "passed")
        passed = statuses.get("passed", 0)
        lines.append(f"execution: {passed}/{total} samples passed ({100 * passed / total:.1f}%)" + (f"; {rest}" if rest else ""))
    from pipeline.report.evaluation import normalize, score_rows

    for label, by_model in score_rows(normalize(by_name.get("evaluate", {}).get("results"))):
        shown = "  ".join(f"{model} {100 * (r.get('pass@1') or 0):.1f}% ({r.get('passed')}/{r.get('total')})"
                          for model, r in by_model.items())
        lines.append(f"{label} pass@1: {shown}")
    return lines


def run_summary(states: Iterable) -> str:
    """The one-screen summary printed at the end of a run: the stage table, execution and pass@1."""
    states = list(states)
    return "\n".join([status_table(states), "", *outcome_lines(states)]).rstrip()
