"""The report's evaluation section: the benchmark x model table, the pass@k curve, flipped problems, the judge.

Reads the evaluate manifest (``results``, ``models``, ``flipped``, ``judge``;
see :mod:`pipeline.benchmarks.summary`). A manifest from before benchmarks
became data (``results`` = ``{model: {pass@1, ...}}``) is read as HumanEval.
"""

from __future__ import annotations

from pipeline.report.collect import StageView
from pipeline.report.markup import esc, note, number, table
from pipeline.report.svg import Bar, Series, hbar_chart, line_chart

MODEL_COLORS = ("#9d9d9d", "#4c78a8", "#54a24b", "#f58518", "#b279a2", "#72b7b2")
MAX_FLIPS = 20


def normalize(results) -> dict[str, dict[str, dict[str, dict]]]:
    """``{benchmark: {model: {suite: scores}}}`` from a manifest's ``results``, old shape included."""
    if not isinstance(results, dict) or not results:
        return {}
    def modern(by_model) -> bool:
        return isinstance(by_model, dict) and bool(by_model) and all(
            isinstance(r, dict) and isinstance(r.get("base"), dict) for r in by_model.values())
    if all(modern(v) for v in results.values()):
        return results
    return {"humaneval": {model: {"base": r if isinstance(r, dict) else {}} for model, r in results.items()}}


def score_rows(results: dict) -> list[tuple[str, dict[str, dict]]]:
    """One (row label, {model: scores}) per benchmark and suite; a suite is named only when there are two."""
    rows = []
    for bench, by_model in results.items():
        suites = ["base"] + (["plus"] if any("plus" in r for r in by_model.values()) else [])
        for suite in suites:
            label = bench if len(suites) == 1 else f"{bench} ({suite} tests)"
            rows.append((label, {model: r.get(suite) or {} for model, r in by_model.items()}))
    return rows


def models_of(results: dict) -> list[str]:
    """Every model in the results, in order of appearance."""
    seen: list[str] = []
    for by_model in results.values():
        seen += [m for m in by_model if m not in seen]
    return seen


def shown_score(scores: dict, k: int = 1) -> str:
    """pass@k in percent with one decimal, or ``-``."""
    value = scores.get(f"pass@{k}")
    return f"{100 * value:.1f}" if isinstance(value, (int, float)) else "-"


def score_table(rows, models: list[str]) -> str:
    """The benchmark x model table of pass@1 (solved/total)."""
    body = [[f"<b>{esc(label)}</b>"] + [f"{esc(shown_score(by_model.get(m, {})))} <small>"
                                        f"({esc(number(by_model.get(m, {}).get('passed')))}/"
                                        f"{esc(number(by_model.get(m, {}).get('total')))})</small>" for m in models]
            for label, by_model in rows]
    return table(["benchmark", *(f"{m} pass@1 (%)" for m in models)], body, css="results",
                 numeric=range(1, len(models) + 1))


def model_table(view: StageView, results: dict, models: list[str]) -> str:
    """Each model's prompt format and path (``models``, or inside old-shape results)."""
    info = view.get("models")
    if not isinstance(info, dict):
        old = view.get("results") if isinstance(view.get("results"), dict) else {}
        info = {m: r for m, r in old.items() if isinstance(r, dict)}
    rows = [(f"<b>{esc(m)}</b>", esc((info.get(m) or {}).get("prompt_format", "")),
             f'<code>{esc((info.get(m) or {}).get("model_path", ""))}</code>') for m in models]
    return table(("model", "prompt", "model path"), rows, css="models")


def pass_at_k_curve(results: dict, models: list[str]) -> str:
    """pass@k against k per model and benchmark, when some model was sampled with k > 1."""
    series = []
    for bench, by_model in results.items():
        for m in models:
            scores = (by_model.get(m) or {}).get("base") or {}
            points = [(float(key[5:]), 100 * v) for key, v in scores.items()
                      if key.startswith("pass@") and key[5:].isdigit() and isinstance(v, (int, float))]
            if len(points) > 1:
                color = MODEL_COLORS[models.index(m) % len(MODEL_COLORS)]
                series.append(Series(f"{m} · {bench}", color, points))
    if not series:
        return note("Greedy decoding gives pass@1 only; a pass@k curve needs samples (greedy: false, samples: n).")
    return ('<figure id="pass-at-k">' + line_chart(series, title="pass@k (%) by k", x_label="k", y_label="pass@k (%)")
            + "<figcaption>pass@k (base tests), unbiased estimator</figcaption></figure>")


def flips(view: StageView) -> str:
    """The problems the second model gained and lost against the first, per benchmark."""
    found = view.get("flipped")
    if not isinstance(found, dict) or not found:
        return ""
    blocks = []
    for bench, flip in found.items():
        if not isinstance(flip, dict):
            continue
        cells = []
        for key, word in (("gained", "solved by {to} only"), ("lost", "solved by {frm} only")):
            found_tasks = flip.get(key)
            tasks: list = found_tasks if isinstance(found_tasks, list) else []
            title = word.format(to=flip.get("to"), frm=flip.get("from"))
            more = note(f"… and {len(tasks) - MAX_FLIPS} more.") if len(tasks) > MAX_FLIPS else ""
            listed = ", ".join(f"<code>{esc(t)}</code>" for t in tasks[:MAX_FLIPS]) or "none"
            cells.append(f"<div><h4>{esc(title)} ({len(tasks)})</h4><p>{listed}</p>{more}</div>")
        blocks.append(f'<div class="flips"><h3>{esc(bench)}: {esc(flip.get("from"))} → {esc(flip.get("to"))}</h3>'
                      f'<div class="pair">{"".join(cells)}</div></div>')
    return "".join(blocks)


def judged(view: StageView) -> str:
    """Wins, ties and losses of the judged comparison."""
    judge = view.get("judge")
    if not isinstance(judge, dict):
        return ""
    rows = [(esc(k), esc(number(judge.get(k)))) for k in ("win", "tie", "loss", "invalid")]
    return (f"<h3>Judged by {esc(judge.get('judge_model'))}: {esc(judge.get('second'))} against "
            f"{esc(judge.get('first'))} (both orders)</h3>" + table(("outcome", "requests"), rows, numeric=(1,))
            + note(f"The judge's reasons per request are in evaluate/{judge.get('rows', 'judge.jsonl')}."))


def delta(rows, models: list[str]) -> str:
    """The change of pass@1 from the first model to the second, per benchmark row."""
    if len(models) < 2:
        return ""
    a, b = models[:2]
    parts = []
    for label, by_model in rows:
        x, y = (by_model.get(a) or {}).get("pass@1"), (by_model.get(b) or {}).get("pass@1")
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            parts.append(f"{label} {100 * (y - x):+.1f} points")
    return note(f"Change from {a} to {b}: " + "; ".join(parts) + ".", "note delta") if parts else ""


def evaluation_section(view: StageView, per_problem=None) -> str:
    """The whole section; ``per_problem(view, models)`` draws flips from rows for old manifests."""
    results = normalize(view.get("results"))
    if not results:
        return note("The evaluate manifest holds no results.")
    models, rows = models_of(results), score_rows(results)
    bars = []
    for label, by_model in rows:
        for i, m in enumerate(models):
            score = (by_model.get(m) or {}).get("pass@1")
            ok = isinstance(score, (int, float))
            bars.append(Bar(f"{label} · {m}", 100.0 * score if ok else None, MODEL_COLORS[i % len(MODEL_COLORS)],
                            f"{100 * score:.1f}%" if ok else "no score"))
    chart = hbar_chart(bars, title="pass@1 (%) per benchmark and model", width=640, scale_max=100.0)
    parts = [f'<div class="side">{score_table(rows, models)}{model_table(view, results, models)}</div>',
             delta(rows, models), chart, pass_at_k_curve(results, models)]
    flipped = flips(view)
    parts.append(flipped if flipped or per_problem is None else per_problem(view, models))
    parts.append(judged(view))
    return "".join(parts)


def text_lines(results) -> list[str]:
    """pass@1 per benchmark and model for the terminal, or nothing when there are no results."""
    results = normalize(results)
    lines = []
    for label, by_model in score_rows(results):
        width = max(len(str(m)) for m in by_model)
        lines.append(f"  {label}")
        for model, r in by_model.items():
            shown = shown_score(r)
            shown = f"{shown:>5}%" if shown != "-" else "    -"
            lines.append(f"    {model:<{width}}  {shown}  ({number(r.get('passed'))}/{number(r.get('total'))})")
    return lines
