"""Results of models on benchmarks: scores per (benchmark, model), the side-by-side table, flipped problems.

Everything here works on plain rows with ``task_id``, ``passed`` (the base
suite) and ``plus_passed`` (base and plus suites; None without a plus
suite), so the evaluate stage's Parquet rows and ``--score``'s answers give
the same numbers. A problem counts as *solved* by a model when at least half
of its samples pass (with greedy decoding: its one answer passes); for a
benchmark with a plus suite, the plus verdict decides.
"""

from __future__ import annotations

from typing import Iterable

from pipeline.benchmarks.passk import DEFAULT_KS, scores


def problem_counts(rows: Iterable[dict], column: str = "passed") -> dict[str, tuple[int, int]]:
    """``{task_id: (samples, passing samples)}``, passing read from ``column``."""
    counts: dict[str, list[int]] = {}
    for row in rows:
        entry = counts.setdefault(row["task_id"], [0, 0])
        entry[0] += 1
        entry[1] += bool(row[column])
    return {task: (n, c) for task, (n, c) in counts.items()}


def benchmark_scores(rows: list[dict], has_plus: bool, ks: Iterable[int] = DEFAULT_KS) -> dict:
    """``{"base": scores, "plus": scores}`` (plus only with a plus suite), each with pass@k, passed and total.

    With several samples per problem, ``pass_counts`` gives each problem's passing samples.
    """
    result = {}
    for suite, column in (("base", "passed"), ("plus", "plus_passed")):
        if suite == "plus" and not has_plus:
            continue
        counts = problem_counts(rows, column)
        result[suite] = scores(counts, ks)
        if any(n > 1 for n, _ in counts.values()):
            result[suite]["pass_counts"] = {task: c for task, (_, c) in counts.items()}
    return result


def solved(rows: Iterable[dict], column: str) -> set[str]:
    """The task ids at least half of whose samples pass."""
    return {task for task, (n, c) in problem_counts(rows, column).items() if 2 * c >= n and c}


def flipped(before: list[dict], after: list[dict], column: str) -> dict[str, list[str]]:
    """The problems ``after`` solves and ``before`` does not (gained), and the reverse (lost)."""
    a, b = solved(before, column), solved(after, column)
    return {"gained": sorted(b - a), "lost": sorted(a - b)}


def table_lines(results: dict[str, dict[str, dict]], models: list[str], k: int = 1) -> list[str]:
    """A text table, one line per benchmark (and suite) and one column per model, of pass@k in percent."""
    rows = []
    for bench, by_model in results.items():
        suites = ["base"] + (["plus"] if any("plus" in r for r in by_model.values()) else [])
        for suite in suites:
            label = bench if suite == "base" and len(suites) == 1 else f"{bench} ({suite} tests)"
            cells = []
            for model in models:
                r = (by_model.get(model) or {}).get(suite) or {}
                score = r.get(f"pass@{k}")
                cells.append(f"{100 * score:5.1f} ({r.get('passed')}/{r.get('total')})" if score is not None else "-")
            rows.append([label, *cells])
    header = ["benchmark", *models]
    widths = [max(len(str(line[i])) for line in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header, *rows]]
