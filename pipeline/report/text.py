"""The report's text summary for the terminal: the stage funnel and pass@1."""

from __future__ import annotations

from typing import Iterable

from pipeline.framework.summary import status_table
from pipeline.report.collect import StageView, find
from pipeline.report.evaluation import normalize, score_rows, text_lines
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
    """pass@1 per benchmark and model from the evaluate manifest, or one line saying why there is none."""
    view = find(views, "evaluate")
    lines = text_lines(view.get("results") if view else None)
    if not lines:
        return [f"pass@1: no results yet (evaluate: {view.state if view else 'not in this pipeline'})"]
    return ["pass@1:", *lines]


def text_summary(views: list[StageView], html_path=None) -> str:
    """The lines printed by ``--report``: the funnel, pass@1, and where the HTML page is."""
    lines = funnel_lines(views) + [""] + pass_at_1_lines(views)
    problems = [f"  {v.name}: {p}" for v in views for p in v.problems]
    if problems:
        lines += ["", "could not read:", *problems]
    if html_path is not None:
        lines += ["", f"report: {html_path}"]
    return "\n".join(lines)


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
    lines += repair_lines(by_name.get("repair", {}).get("stats") or {})
    for label, by_model in score_rows(normalize(by_name.get("evaluate", {}).get("results"))):
        shown = "  ".join(f"{model} {100 * (r.get('pass@1') or 0):.1f}% ({r.get('passed')}/{r.get('total')})"
                          for model, r in by_model.items())
        lines.append(f"{label} pass@1: {shown}")
    return lines


def repair_lines(stats: dict) -> list[str]:
    """The repair rounds' outcome: instructions rescued of those no sample solved, per round (none without rounds)."""
    rounds = sorted((int(k.rsplit("_", 1)[1]), v) for k, v in stats.items() if k.startswith("rescued_round_"))
    if not rounds:
        return []
    per_round = ", ".join(f"round {r}: {n}" for r, n in rounds)
    return [f"repair: {stats.get('rescued', 0)} of {stats.get('instructions_unsolved', 0)} unsolved instructions "
            f"rescued ({per_round}; {stats.get('repair_attempts', 0)} attempts)"]


def run_summary(states: Iterable) -> str:
    """The one-screen summary printed at the end of a run: the stage table, execution and pass@1."""
    states = list(states)
    return "\n".join([status_table(states), "", *outcome_lines(states)]).rstrip()
