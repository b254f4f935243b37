"""The report's sections about outcomes: execution statuses, the loss curve, the evaluation (per-problem fallback)."""

from __future__ import annotations

import base64

from pipeline.framework.store import StageStore
from pipeline.report.collect import StageView, describe_error
from pipeline.report.evaluation import evaluation_section
from pipeline.report.markup import esc, key_values, note, number, percent, table
from pipeline.report.svg import Bar, hbar_chart

STATUS_COLORS = {"passed": "#54a24b", "failed": "#e45756", "timeout": "#f58518", "oom": "#b279a2", "error": "#9d755d"}
STATUS_ORDER = ("passed", "failed", "timeout", "oom", "error")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_DIFFERING = 20


def _missing(view: StageView | None, name: str) -> str:
    """The note for a section whose stage has produced nothing."""
    state = view.state if view else "not in this pipeline"
    return note(f"The {name} stage has no output yet ({state}).")


def execution(view: StageView | None) -> str:
    """Status counts of the executed samples as bars and a table, with the verdict cache's hits."""
    if view is None or not view.has_output:
        return _missing(view, "execute")
    stats = view.stats
    statuses = {k[len("status_"):]: v for k, v in stats.items() if k.startswith("status_")}
    names = [s for s in STATUS_ORDER if s in statuses] + sorted(set(statuses) - set(STATUS_ORDER))
    total = sum(statuses.values())
    if not total:
        return note("The execute stage recorded no statuses.")
    bars = [Bar(s, float(statuses[s]), STATUS_COLORS.get(s, "#72b7b2"),
                f"{number(statuses[s])} ({percent(statuses[s], total)})") for s in names]
    rows = [(f'<span class="dot" style="background:{STATUS_COLORS.get(s, "#72b7b2")}"></span>{esc(s)}',
             esc(number(statuses[s])), esc(percent(statuses[s], total))) for s in names]
    rows.append(("<b>all samples</b>", f"<b>{esc(number(total))}</b>", ""))
    hits = stats.get("cache_hits")
    cache = (f"Verdict cache: {number(hits)} of {number(total)} samples ({percent(hits, total)}) were answered "
             "from the cache, not re-executed." if hits is not None else "Verdict cache hits were not recorded.")
    return (f'<div class="side">{hbar_chart(bars, title="execution statuses", width=560)}'
            f'{table(("status", "samples", "share"), rows, css="statuses", numeric=(1, 2))}</div>' + note(cache))


def loss(view: StageView | None) -> str:
    """The fine-tuning loss curve (``finetune/loss.png``) embedded as a data URI, and the stage's counters."""
    if view is None:
        return _missing(view, "finetune")
    parts = []
    path = view.folder / "loss.png"
    try:
        data = path.read_bytes() if path.is_file() else None
    except OSError as exc:
        data, parts = None, [note(f"{path}: {describe_error(exc)}", "note problem")]
    if data is not None and data.startswith(PNG_SIGNATURE):
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        parts.append(f'<figure><img id="loss-curve" src="{uri}" alt="training loss by step">'
                     f"<figcaption>Training loss ({esc(path.name)})</figcaption></figure>")
    elif data is not None:
        parts.append(note(f"{path.name} is not a PNG image; not shown.", "note problem"))
    else:
        parts.append(note(f"No loss curve yet: {path} does not exist ({view.state})."))
    training = view.get("training")
    tables = []
    if view.stats:
        tables.append("<div><h3>Training counters</h3>" + key_values(view.stats) + "</div>")
    if isinstance(training, dict) and training:
        tables.append("<div><h3>Training run</h3>" + key_values(training) + "</div>")
    if tables:
        parts.append('<div class="side">' + "".join(tables) + "</div>")
    return "".join(parts)


def _outcomes(view: StageView) -> tuple[list[str], dict[str, dict[str, bool]]]:
    """Models in order of appearance and, per task id, whether each model passed it."""
    table_ = StageStore(view.folder.parent, view.name).read_table()
    if not {"model", "task_id", "passed"} <= set(table_.column_names):
        return [], {}
    models: list[str] = []
    by_task: dict[str, dict[str, bool]] = {}
    for row in table_.select(["model", "task_id", "passed"]).to_pylist():
        if row["model"] not in models:
            models.append(row["model"])
        by_task.setdefault(str(row["task_id"]), {})[row["model"]] = bool(row["passed"])
    return models, by_task


def _per_problem(view: StageView, models: list[str]) -> str:
    """How the first two models compare problem by problem (manifests written before ``flipped`` existed)."""
    try:
        found, by_task = _outcomes(view)
    except Exception as exc:
        return note(f"Per-problem rows unreadable: {describe_error(exc)}", "note problem")
    pair = [m for m in models if m in found][:2] or found[:2]
    if len(pair) < 2:
        return note("No per-problem rows for two models to compare.") if not by_task else ""
    a, b = pair
    tally = {"both pass": 0, f"only {b}": 0, f"only {a}": 0, "both fail": 0}
    differing = []
    for task, passed in sorted(by_task.items()):
        pa_, pb = passed.get(a, False), passed.get(b, False)
        key = "both pass" if pa_ and pb else f"only {b}" if pb else f"only {a}" if pa_ else "both fail"
        tally[key] += 1
        if pa_ != pb:
            differing.append((esc(task), "✔" if pa_ else "✘", "✔" if pb else "✘"))
    summary = table(("outcome", "problems"), ((esc(k), esc(number(v))) for k, v in tally.items()), numeric=(1,))
    shown = differing[:MAX_DIFFERING]
    more = note(f"… and {len(differing) - len(shown)} more.") if len(differing) > len(shown) else ""
    detail = (table(("task", a, b), shown, css="differ") + more) if shown else note("Both models pass the same problems.")
    return f'<div class="pair"><div><h3>{esc(a)} vs {esc(b)}</h3>{summary}</div><div><h3>Problems that differ</h3>{detail}</div></div>'


def evaluation(view: StageView | None) -> str:
    """The benchmark x model table, pass@k curve, flipped problems and judge (:mod:`pipeline.report.evaluation`)."""
    if view is None or not view.has_output:
        return _missing(view, "evaluate")
    return evaluation_section(view, _per_problem)
