"""The evaluate stage's outcome: scores per benchmark and model, flipped problems, the judged comparison.

Manifest fields written here:

``results``  ``{benchmark: {model: {"base": scores, "plus": scores}}}`` (plus for plus benchmarks;
             scores = pass@k, passed, total, and ``pass_counts`` with several samples);
``models``   ``{model: {"model_path", "prompt_format"}}``;
``flipped``  ``{benchmark: {"from", "to", "gained", "lost"}}``: problems the second model (the
             fine-tune when both base and finetuned are evaluated) solves and the first does not,
             and the reverse, by the strictest suite;
``judge``    wins, ties, losses and invalid judgements of the second judged model, the judge, and
             where its rows are (``judge.jsonl`` in the stage folder).
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.benchmarks.judge import COMPLETION_STOP, COMPLETION_TEMPLATE, judge_pairs, read_requests, read_rubric, tally
from pipeline.benchmarks.results import benchmark_scores, flipped, table_lines
from pipeline.framework.errors import PipelineError
from pipeline.framework.store import atomic_write_bytes

REPO = Path(__file__).resolve().parents[2]
JUDGE_FILE = "judge.jsonl"


def repo_path(path: str) -> Path:
    """A path as given, or relative to the repository when it is not found from here (the shipped files)."""
    given = Path(path).expanduser()
    return given if given.exists() or given.is_absolute() else REPO / given


def comparison_pair(labels: list[str]) -> tuple[str, str] | None:
    """The two models whose flips are reported: base and finetuned when both are there, else the first two."""
    if {"base", "finetuned"} <= set(labels):
        return "base", "finetuned"
    return (labels[0], labels[1]) if len(labels) >= 2 else None


class EvaluationReport:
    """Collects what the stage reports beyond its rows, and writes the log lines."""

    def __init__(self, config, contenders, log):
        self.config = config
        self.contenders = contenders
        self.log = log
        self.judge_answers: dict[str, dict[str, str]] = {}

    def collect_judge_answers(self, contender, backend) -> None:
        """The contender's answers to the judge's requests, each in its prompt format, greedy."""
        from pipeline.llm import SamplingParams

        settings = self.config.judge
        requests = read_requests(repo_path(settings.requests))
        if contender.prompt_format == "chat":
            params = SamplingParams(temperature=0.0, max_tokens=settings.max_tokens)
            outputs = backend.generate_chat([[{"role": "user", "content": r["request"]}] for r in requests], params)
        else:
            params = SamplingParams(temperature=0.0, max_tokens=settings.max_tokens, stop=COMPLETION_STOP)
            outputs = backend.generate([COMPLETION_TEMPLATE.format(request=r["request"]) for r in requests], params)
        self.judge_answers[contender.label] = {r["id"]: out[0].text for r, out in zip(requests, outputs)}

    def summarize(self, benches, table: list[dict]) -> dict:
        """``results``, ``models`` and ``flipped`` from the stage's rows, logged as a table."""
        labels = [c.label for c in self.contenders]
        results, flips = {}, {}
        pair = comparison_pair(labels)
        for bench in benches:
            rows = {label: [r for r in table if r["model"] == label and r["benchmark"] == bench.name]
                    for label in labels}
            results[bench.name] = {label: benchmark_scores(rows[label], bench.has_plus, self.config.ks)
                                   for label in labels}
            if pair:
                column = "plus_passed" if bench.has_plus else "passed"
                flips[bench.name] = {"from": pair[0], "to": pair[1], **flipped(rows[pair[0]], rows[pair[1]], column)}
        models = {c.label: {"model_path": c.model_path, "prompt_format": c.prompt_format} for c in self.contenders}
        self.log_table(results, labels, flips, table)
        return {"results": results, "models": models, "flipped": flips}

    def log_table(self, results: dict, labels: list[str], flips: dict, table: list[dict]) -> None:
        """The benchmark x model table, the flips, and some unsolved problems per model."""
        decoding = "greedy" if self.config.greedy else f"{self.config.samples} samples at temperature {self.config.temperature}"
        self.log.info("evaluate: pass@1 %% (solved/total), %s decoding", decoding)
        for line in table_lines(results, labels):
            self.log.info("  %s", line)
        for bench, flip in flips.items():
            self.log.info("  %s: %s solves %d that %s does not (%s); loses %d (%s)", bench, flip["to"],
                          len(flip["gained"]), flip["from"], ", ".join(flip["gained"][:8]) or "-",
                          len(flip["lost"]), ", ".join(flip["lost"][:8]) or "-")
        shown = self.config.log_failures
        for label in labels:
            unsolved = sorted({f"{r['benchmark']}:{r['task_id']}" for r in table if r["model"] == label and not r["passed"]})
            if unsolved and shown:
                more = f" (+{len(unsolved) - shown} more)" if len(unsolved) > shown else ""
                self.log.info("  %s unsolved: %s%s", label, ", ".join(unsolved[:shown]), more)


def judged_comparison(stage, report: EvaluationReport, folder: Path) -> dict:
    """Ask the judge about every request in both orders, write ``judge.jsonl``, return the tally."""
    from pydantic import ValidationError

    from pipeline.llm import LLMConfig, SamplingParams

    settings = stage.config.judge
    first, second = settings.models
    missing = [m for m in (first, second) if m not in report.judge_answers]
    if missing:
        raise PipelineError(f"stages.evaluate.judge.models: {', '.join(missing)} is not among the evaluated models")
    base = stage.model_config.model_dump() if stage.model_config is not None else {}
    try:
        judge_config = LLMConfig.model_validate({**base, **settings.judge})
    except ValidationError as exc:
        raise PipelineError(f"stages.evaluate.judge.judge: {exc.errors()[0]['msg']}") from None
    requests = read_requests(repo_path(settings.requests))
    rubric = read_rubric(repo_path(settings.rubric))
    params = SamplingParams(temperature=0.0, max_tokens=settings.judge_max_tokens)
    stage.log.info("evaluate: judge %s compares %s and %s on %d requests, both orders", judge_config.model, first,
                   second, len(requests))
    with stage.open_backend(judge_config) as backend:
        judgements = judge_pairs(backend, params, rubric, requests, (first, report.judge_answers[first]),
                                 (second, report.judge_answers[second]), settings.prompt_format)
    text = "".join(json.dumps(j.to_dict()) + "\n" for j in judgements)
    atomic_write_bytes(Path(folder) / JUDGE_FILE, text.encode("utf-8"))
    counts = tally(judgements)
    stage.log.info("  judged: %s wins %d, ties %d, loses %d against %s (invalid %d)", second, counts["win"],
                   counts["tie"], counts["loss"], first, counts["invalid"])
    return {**counts, "first": first, "second": second, "judge_model": judge_config.model, "rows": JUDGE_FILE}
