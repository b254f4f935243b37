"""The report's text summary for the terminal: the stage funnel and pass@1."""

from __future__ import annotations

from pipeline.report.collect import StageView, find
from pipeline.report.markup import number


def funnel_lines(views: list[StageView]) -> list[str]:
    """One line per stage: name, state, rows out and the share kept of rows in."""
    width = max((len(v.name) for v in views), default=5)
    lines = ["stage funnel (rows out):"]
    for v in views:
        out = v.get("rows_out") if v.has_output else None
        extra = f"  ({number(v.get('rows_in'))} in, {number(sum(v.dropped.values()))} dropped)" if out is not None else ""
        if v.partial:
            extra += "  (unfinished run, so far)"
        lines.append(f"  {v.name:<{width}}  {v.state:<11}  {number(out):>10}{extra}".rstrip())
    return lines


def pass_at_1_lines(views: list[StageView]) -> list[str]:
    """pass@1 per model from the evaluate manifest, or one line saying why there is none."""
    view = find(views, "evaluate")
    results = (view.get("results") if view else None) or {}
    if not isinstance(results, dict) or not results:
        return [f"pass@1: no results yet (evaluate: {view.state if view else 'not in this pipeline'})"]
    width = max(len(str(m)) for m in results)
    lines = ["pass@1:"]
    for model, r in results.items():
        r = r if isinstance(r, dict) else {}
        score = r.get("pass@1")
        shown = f"{100 * score:5.1f}%" if isinstance(score, (int, float)) else "    -"
        lines.append(f"  {model:<{width}}  {shown}  ({number(r.get('passed'))}/{number(r.get('total'))})")
    return lines


def text_summary(views: list[StageView], html_path=None) -> str:
    """The lines printed by ``--report``: the funnel, pass@1, and where the HTML page is."""
    lines = funnel_lines(views) + [""] + pass_at_1_lines(views)
    problems = [f"  {v.name}: {p}" for v in views for p in v.problems]
    if problems:
        lines += ["", "could not read:", *problems]
    if html_path is not None:
        lines += ["", f"report: {html_path}"]
    return "\n".join(lines)
