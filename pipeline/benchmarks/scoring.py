"""``--score ANSWERS.jsonl --benchmark NAME``: score answers made anywhere through the same harness.

The answers file is JSONL, one answer per line: ``task_id`` and either
``completion`` (appended to the problem's prompt as it is) or ``solution``
(a whole program). A task id may appear several times (samples: pass@k is
then reported for each k up to the fewest samples of a problem). Answers to
task ids the benchmark lacks are an error naming the line; problems with no
answer are left out of the score (and listed).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.benchmarks.catalog import load_benchmark
from pipeline.benchmarks.harness import Answer, Harness, TimeLimits
from pipeline.benchmarks.results import benchmark_scores
from pipeline.framework.errors import PipelineError
from pipeline.framework.jsonl import jsonl_records
from pipeline.framework.progress import progress

log = logging.getLogger("pipeline.benchmarks")


def read_answers(path: Path, known: set[str]) -> list[Answer]:
    """The answers of a JSONL file, each numbered within its task (its sample index)."""
    if not path.is_file():
        raise PipelineError(f"answers file {path} does not exist")
    answers, samples = [], {}
    for number, record in jsonl_records(path):
        task = record.get("task_id")
        if task is None:
            raise PipelineError(f"{path}: line {number} has no task_id")
        task = str(task)
        if task not in known:
            raise PipelineError(f"{path}: line {number}: task {task} is not in the benchmark")
        if isinstance(record.get("solution"), str):
            text, form = record["solution"], "solution"
        elif isinstance(record.get("completion"), str):
            text, form = record["completion"], "append"
        else:
            raise PipelineError(f"{path}: line {number} has neither a completion nor a solution string")
        answers.append(Answer(task, text, form, samples.get(task, 0)))
        samples[task] = samples.get(task, 0) + 1
    if not answers:
        raise PipelineError(f"answers file {path} holds no answers")
    return answers


def score_answers(path: str | Path, benchmark_name: str, config, work_dir: Path) -> dict:
    """Score an answers file on a benchmark in the sandbox; return the scores and the failed task ids.

    ``config`` is the evaluate stage's config (sandbox, time limits, benchmark files).
    """
    from pipeline.execution.verdicts import SandboxSession

    benchmark = load_benchmark(benchmark_name, config.benchmark_files, Path(work_dir) / "cache")
    answers = read_answers(Path(path), {p.task_id for p in benchmark.problems})
    missing = sorted({p.task_id for p in benchmark.problems} - {a.task_id for a in answers})
    if missing:
        log.warning("%s: %d problem(s) have no answer and are left out: %s", path, len(missing),
                    ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    limits = TimeLimits(config.time_limit_factor, config.time_limit_floor_s, config.reference_timeout_s)
    with SandboxSession(config.sandbox, work_dir) as session:
        harness = Harness(session, limits)
        bar = progress(total=len(answers) * len(benchmark.suite_names), desc=f"score {benchmark.name}",
                       unit="programs")
        try:
            scored = harness.score(benchmark, answers, on_verdict=lambda _: bar.update(1))
        finally:
            bar.close()
    rows = [s.row() for s in scored]
    result = benchmark_scores(rows, benchmark.has_plus, config.ks)
    failed = sorted({r["task_id"] for r in rows if not r["passed"]})
    return {"benchmark": benchmark.name, "answers": len(answers), "unanswered": missing, "scores": result,
            "failed": failed}


def score_lines(outcome: dict) -> list[str]:
    """What ``--score`` prints: one line per suite with pass@k and counts, then some failed task ids."""
    lines = []
    for suite, r in outcome["scores"].items():
        ks = "  ".join(f"{k} {100 * v:.1f}%" for k, v in r.items() if k.startswith("pass@"))
        lines.append(f"{outcome['benchmark']} ({suite} tests): {r['passed']}/{r['total']} solved  {ks}")
    if outcome["failed"]:
        shown = ", ".join(outcome["failed"][:10])
        more = f" (+{len(outcome['failed']) - 10} more)" if len(outcome["failed"]) > 10 else ""
        lines.append(f"failing base tests: {shown}{more}")
    return lines
