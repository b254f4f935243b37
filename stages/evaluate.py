"""evaluate: every model on every benchmark, executed in the sandbox, side by side (and optionally judged).

Each model (``models``: the base, the fine-tune, any directory, package model,
Hub id or OpenAI-compatible endpoint; by default the base and the fine-tune)
answers every problem of every benchmark (``benchmarks``: HumanEval,
HumanEval+, MBPP+, MBPP, or files in their formats) in its prompt format,
greedily by default (``samples`` answers at ``temperature`` for pass@k). Each
answer runs with the problem's tests in the locked-down Docker sandbox, under
a time limit scaled from the reference solution's runtime; the plus
benchmarks are scored on their base and their plus tests. The manifest's
``results`` hold pass@k per benchmark and model, ``flipped`` the problems
the fine-tune gained and lost against the base, and ``judge`` (when enabled)
the wins, ties and losses of the judged comparison (rows in ``judge.jsonl``).
Formats, harness and estimator live in :mod:`pipeline.benchmarks`.

Normally the stage reads the finetune stage's output, so it goes stale
whenever a new model is trained. With ``--input`` (benchmark names or files,
comma-separated) it runs on its own, without a finetune stage unless a model
is ``finetuned``. Answers and verdicts are committed batch by batch, so an
interrupted run resumes where it stopped; verdicts are cached by program.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipeline.benchmarks.answers import chat_messages, completion_prompt, stop_strings
from pipeline.benchmarks.contenders import Contender, resolve
from pipeline.benchmarks.harness import Answer, Harness, TimeLimits
from pipeline.benchmarks.preflight import evaluation_checks
from pipeline.benchmarks.settings import EvaluateConfig
from pipeline.benchmarks.source import BenchmarkSource, evaluation_source
from pipeline.benchmarks.summary import EvaluationReport, judged_comparison
from pipeline.execution.verdicts import SandboxSession, settings_without_verdict
from pipeline.framework.errors import PipelineError
from pipeline.framework.ids import stable_id
from pipeline.framework.progress import progress
from pipeline.framework.stage import WholeStage
from pipeline.framework.store import StageStore
from pipeline.generation.stage import row_seed
from pipeline.training.saving import finetuned_model_dir


class EvaluateStage(WholeStage):
    """Benchmarks x models in the sandbox: pass@k side by side, flipped problems, an optional judge."""

    name = "evaluate"
    title = "benchmarks x models in the sandbox (pass@k, flips, judge)"
    upstream = "finetune"
    Config = EvaluateConfig
    uses_model = True
    timing_columns = ("duration_s", "time_limit_s")  # the limit scales with the reference's measured runtime
    unfingerprinted = settings_without_verdict()
    input_columns = {"benchmark": "benchmark name", "task_id": "problem id", "prompt": "what the model continues",
                     "entry_point": "function name"}
    output_columns = {
        "id": (pa.string(), "row id (model, benchmark, task, sample)"),
        "model": (pa.string(), "the model's label"), "model_path": (pa.string(), "the model evaluated"),
        "benchmark": (pa.string(), "the benchmark"), "task_id": (pa.string(), "the problem"),
        "sample": (pa.int64(), "sample index (0 with greedy decoding)"),
        "prompt_format": (pa.string(), "completion or chat"), "completion": (pa.string(), "the model's raw answer"),
        "finish_reason": (pa.string(), "stop or length (the token limit)"),
        "program": (pa.string(), "the program run: solution then the base tests"),
        "status": (pa.string(), "base tests: passed, failed, timeout, oom or error"),
        "passed": (pa.bool_(), "base tests passed"),
        "plus_status": (pa.string(), "plus tests' status (plus benchmarks only)"),
        "plus_passed": (pa.bool_(), "base and plus tests passed (plus benchmarks only)"),
        "time_limit_s": (pa.float64(), "the base program's time limit (None: the sandbox's)"),
        "duration_s": (pa.float64(), "wall-clock seconds the base program ran"),
        "stderr": (pa.string(), "tail of its standard error (why it failed)"),
        "program_hash": (pa.string(), "the verdict cache key of the base program"),
    }

    def uses_finetuned(self) -> bool:
        """Whether one of the models is the finetune stage's."""
        return any(e.model == "finetuned" for e in self.config.entries())

    def fingerprint_files(self) -> list[Path]:
        """The finetune stage's manifest, when its model is evaluated: a retrained model makes this stale."""
        manifest = StageStore(self.run_config.work_dir, self.upstream).manifest_path
        return [manifest] if self.uses_finetuned() and manifest.exists() else []

    def input_source(self, ctx, override: str | None) -> BenchmarkSource:
        """The benchmarks (``--input`` replaces the configured list); the digest follows the fine-tune."""
        specs = [s for s in override.split(",") if s.strip()] if override else None
        return evaluation_source(self.config, specs, ctx.work_dir / "cache", ctx.stage_store(self.upstream),
                                 self.uses_finetuned())

    def contenders(self, ctx) -> list[Contender]:
        """The models to evaluate, resolved before any work (a missing fine-tune fails here)."""
        from pipeline.llm import LLMConfig

        def finetuned() -> Path:  # asked only when a model is the fine-tune
            return finetuned_model_dir(ctx.stage_store(self.upstream))

        found = [resolve(e, self.model_config, finetuned, LLMConfig) for e in self.config.entries()]
        labels = [c.label for c in found]
        if len(set(labels)) != len(labels):
            raise PipelineError(f"stages.evaluate.models: labels must differ, got {labels}")
        return found

    def preflight_checks(self, ctx) -> list:
        """The sandbox, the benchmarks, and each model's longest prompt per benchmark plus ``max_tokens``."""
        return evaluation_checks(ctx, self.name, self.config, self.model_config)

    def open_backend(self, llm_config):
        """Start the generation backend for one model (tests replace this with a fixture)."""
        from pipeline.llm import create_backend

        return create_backend(llm_config)

    def run(self, ctx) -> dict:
        """Answer, execute and score every benchmark with every model, then the table, flips and judge."""
        benches, contenders = ctx.source.benchmarks, self.contenders(ctx)
        store = ctx.store
        store.remove_leftovers()
        done = store.commit_log().input_ids
        judge = self.config.judge if self.config.judge.enabled else None
        report = EvaluationReport(self.config, contenders, self.log)
        limits = TimeLimits(self.config.time_limit_factor, self.config.time_limit_floor_s, self.config.reference_timeout_s)
        with SandboxSession(self.config.sandbox, ctx.work_dir) as session:
            harness = Harness(session, limits)
            for contender in contenders:
                todo = {b.name: [p for p in b.problems if self.row_id(contender, b.name, p.task_id, 0) not in done]
                        for b in benches}
                wants_judge = judge is not None and contender.label in judge.models
                if not any(todo.values()) and not wants_judge:
                    continue
                with self.open_backend(contender.llm_config) as backend:
                    for bench in benches:
                        self.evaluate(contender, bench, todo[bench.name], backend, harness, store)
                    if wants_judge:
                        report.collect_judge_answers(contender, backend)
        table = store.read_table().to_pylist()
        fields = report.summarize(benches, table)
        if judge is not None:
            fields["judge"] = judged_comparison(self, report, store.dir)
        return {**store.commit_log().manifest_fields(), **fields}

    @staticmethod
    def row_id(contender: Contender, benchmark: str, task_id: str, sample: int) -> str:
        """The id of a (model, benchmark, problem, sample) row."""
        return stable_id(contender.label, benchmark, task_id, sample)

    def sampling(self, stop: list[str]):
        """Greedy decoding, or ``samples`` answers at ``temperature`` (the seeds are per problem: :meth:`row_seed`)."""
        return self.config.sampling(stop)

    def row_seed(self, contender: Contender, benchmark: str, task_id: str) -> int:
        """The sampling seed of one problem for one model: run seed, model, benchmark and task, never the batch.

        Its ``samples`` answers are the backend's draws 0..n-1 from this seed, so
        the row of (task, sample index) does not depend on what it was batched with.
        """
        return row_seed(self.seed, self.name, stable_id(contender.label, benchmark, task_id))

    def evaluate(self, contender: Contender, bench, problems: list, backend, harness, store) -> None:
        """Answer, run and commit ``problems`` for one model, one batch (one Parquet part) at a time."""
        if not problems:
            return
        size = self.config.batch_size or self.run_config.batch_size
        self.log.info("evaluate: %s (%s, %s prompts) on %s: %d problems", contender.label, contender.model_path,
                      contender.prompt_format, bench.name, len(problems))
        with progress(total=len(problems), desc=f"{contender.label} {bench.name}", unit="problems") as bar:
            for start in range(0, len(problems), size):
                batch = problems[start : start + size]
                seeds = [self.row_seed(contender, bench.name, p.task_id) for p in batch]
                if contender.prompt_format == "chat":
                    outputs = backend.generate_chat([chat_messages(p) for p in batch], self.sampling([]), seeds=seeds)
                else:
                    stop = sorted(set.intersection(*(set(stop_strings(p)) for p in batch)))
                    outputs = backend.generate([completion_prompt(p) for p in batch], self.sampling(stop), seeds=seeds)
                answers = [Answer(p.task_id, c.text, contender.prompt_format, i)
                           for p, outs in zip(batch, outputs) for i, c in enumerate(outs)]
                finish = [c.finish_reason for outs in outputs for c in outs]
                scored = harness.score(bench, answers)
                rows = [s.stage_row(self.row_id(contender, bench.name, s.answer.task_id, s.answer.sample), contender,
                                    bench.name, reason) for s, reason in zip(scored, finish)]
                stats = {f"{contender.label}_{bench.name}_passed": sum(r["passed"] for r in rows),
                         f"{contender.label}_{bench.name}_total": len(rows),
                         "cache_hits": sum(s.suites["base"].cached for s in scored)}
                ids = [r["id"] for r in rows]
                store.write_batch(stable_id(*ids), rows, self.output_schema(), [], ids, stats=stats,
                                  keep_dropped=self.run_config.keep_dropped)
                bar.update(len(batch))
