"""The report's sections about the data flow: overview, stage funnel, drop reasons, sampled rows."""

from __future__ import annotations

from pipeline.report.collect import StageView
from pipeline.report.markup import esc, note, number, percent, seconds, state_badge, table
from pipeline.report.samples import SHORT_COLUMNS, clip, display_fields
from pipeline.report.svg import Bar, hbar_chart

FUNNEL_COLOR = "#4c78a8"
PARTIAL_COLOR = "#9ecae9"
DROP_COLOR = "#e45756"


def _rows_note(view: StageView) -> str:
    """What a stage's row counts are, when they are not a finished run's."""
    if view.partial:
        return "so far (unfinished run)"
    if view.state not in ("done",) and view.has_output:
        return f"from its last run ({view.state})"
    return ""


def overview(views: list[StageView]) -> str:
    """Every stage with its state, rows in and out, drops, time, and any problem reading it."""
    rows = []
    for v in views:
        remark = "; ".join(x for x in (v.why, _rows_note(v), *v.problems) if x)
        dropped = sum(v.dropped.values()) if v.has_output else None
        rows.append((
            f'<a href="#stage-{esc(v.name)}">{esc(v.name)}</a>', state_badge(v.state),
            esc(number(v.get("rows_in"))), esc(number(v.get("rows_out"))), esc(number(dropped)),
            esc(seconds(v.get("wall_seconds"))), esc(v.title), esc(remark),
        ))
    return table(("stage", "state", "rows in", "rows out", "dropped", "time", "what it does", "note"),
                 rows, css="overview", numeric=(2, 3, 4, 5))


def funnel(views: list[StageView]) -> str:
    """Rows out per stage as a bar chart, each with the rows it read and dropped."""
    bars = []
    for v in views:
        out = v.get("rows_out")
        if not v.has_output or out is None:
            bars.append(Bar(v.name, None, text=v.state))
            continue
        text = f"{number(out)}  ({number(v.get('rows_in'))} in, {number(sum(v.dropped.values()))} dropped)"
        if v.partial:
            text += "  so far"
        bars.append(Bar(v.name, float(out), PARTIAL_COLOR if v.partial else FUNNEL_COLOR, text))
    chart = hbar_chart(bars, title="rows out per stage", width=880)
    return chart + note("Bars: rows each stage wrote (light: an unfinished run, counted from its committed parts). "
                        "A stage may write several rows per row read (n responses per instruction).")


def drops(views: list[StageView]) -> str:
    """Per stage, each drop reason with its count, its share of the stage's input and a bar."""
    blocks = []
    for v in views:
        reasons = sorted(v.dropped.items(), key=lambda kv: (-kv[1], kv[0]))
        if not reasons:
            continue
        top = max(count for _, count in reasons) or 1
        total = sum(count for _, count in reasons)
        judged = total + (v.get("rows_out") or 0)
        rows = [(
            f"<code>{esc(reason)}</code>", esc(number(count)), esc(percent(count, judged)),
            f'<span class="minibar" style="width:{max(2, round(160 * count / top))}px;background:{DROP_COLOR}"></span>',
        ) for reason, count in reasons]
        blocks.append(
            f'<div class="drop-stage" id="drops-{esc(v.name)}"><h3>{esc(v.name)} '
            f'<small>{esc(number(total))} of {esc(number(judged))} candidate rows dropped</small></h3>'
            + table(("reason", "rows", "% of candidates", ""), rows, css="drops", numeric=(1, 2)) + "</div>"
        )
    if not blocks:
        return note("No stage has dropped rows (or none has run yet).")
    return '<div class="drop-grid">' + "".join(blocks) + "</div>"


def _sample_card(row: dict, total, dropped: bool) -> str:
    """One sampled row: its position and id, short fields as tags, long ones as clipped text."""
    fields = display_fields(row)
    tags = "".join(f'<span class="tag"><b>{esc(k)}</b> {esc(v)}</span>' for k, v in fields if k in SHORT_COLUMNS)
    blocks = []
    for key, text in fields:
        if key in SHORT_COLUMNS:
            continue
        shown, cut = clip(text)
        more = f'<div class="cut">… {cut:,} more character{"s" if cut > 1 else ""}</div>' if cut else ""
        blocks.append(f'<div class="field"><div class="fname">{esc(key)}</div><pre>{esc(shown)}</pre>{more}</div>')
    where = f"row {row.get('_index', 0) + 1:,} of {number(total)}" if total is not None else f"row {row.get('_index', 0) + 1:,}"
    row_id = str(row.get("id") or "")
    row_id = row_id if len(row_id) <= 40 else row_id[:16] + "…"
    ident = f" · id <code>{esc(row_id)}</code>" if row_id else ""
    kind = "dropped " if dropped else ""
    return (f'<div class="sample{" dropped" if dropped else ""}"><div class="shead">{kind}{esc(where)}{ident}</div>'
            f'<div class="tags">{tags}</div>{"".join(blocks)}</div>')


def samples(views: list[StageView]) -> str:
    """A few kept rows of every stage, and a few dropped ones folded away, all HTML-escaped and clipped."""
    blocks = []
    for v in views:
        head = f'<h3 id="stage-{esc(v.name)}">{esc(v.name)} {state_badge(v.state)}</h3>'
        if v.samples:
            body = "".join(_sample_card(r, v.get("rows_out"), False) for r in v.samples)
        else:
            body = note("No rows to show." if v.has_output else f"No output ({v.state}).")
        if v.dropped_samples:
            body += (f'<details><summary>{len(v.dropped_samples)} dropped rows</summary>'
                     + "".join(_sample_card(r, sum(v.dropped.values()) or None, True) for r in v.dropped_samples)
                     + "</details>")
        blocks.append(f'<div class="stage-samples">{head}{body}</div>')
    return note("Rows are drawn with the run seed, so the same work dir shows the same rows.") + "".join(blocks)
