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

from dataclasses import replace
from pathlib import Path

import pyarrow as pa

from pipeline.benchmarks.answers import chat_messages, completion_prompt, stop_strings
from pipeline.benchmarks.catalog import load_benchmark, pending_download
from pipeline.benchmarks.contenders import FINETUNED, Contender, resolve
from pipeline.benchmarks.harness import Answer, Harness, TimeLimits
from pipeline.benchmarks.settings import EvaluateConfig
from pipeline.benchmarks.source import BenchmarkSource
from pipeline.benchmarks.summary import EvaluationReport, judged_comparison
from pipeline.execution.verdicts import SandboxSession, sandbox_preflight
from pipeline.framework.errors import PipelineError
from pipeline.framework.ids import stable_id
from pipeline.framework.map_runner import manifest_fields
from pipeline.framework.preflight import FAIL, WARN, Check, RowEstimate
from pipeline.framework.progress import progress
from pipeline.framework.stage import WholeStage
from pipeline.framework.store import StageStore
from pipeline.generation.stage import row_seed


class EvaluateStage(WholeStage):
    """Benchmarks x models in the sandbox: pass@k side by side, flipped problems, an optional judge."""

    name = "evaluate"
    title = "benchmarks x models in the sandbox (pass@k, flips, judge)"
    upstream = "finetune"
    Config = EvaluateConfig
    uses_model = True
    timing_columns = ("duration_s", "time_limit_s")  # the limit scales with the reference's measured runtime
    unfingerprinted = ("sandbox.workers", "sandbox.build", "sandbox.debian_mirror", "sandbox.docker_url",
                       "sandbox.start_timeout_s", "sandbox.host_grace_s", "sandbox.preload_modules")
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
        specs = [s for s in override.split(",") if s.strip()] if override else self.config.benchmarks
        cache = Path(self.run_config.work_dir) / "cache"
        benches = [load_benchmark(s, self.config.benchmark_files, cache).select(self.config.limit, self.config.task_ids)
                   for s in specs]
        finetune = ctx.stage_store(self.upstream)
        if override is None:
            from pipeline.framework.inputs import StoreSource

            digest = StoreSource(finetune).digest()
        else:
            upstream = (finetune.read_manifest() or {}).get("output_digest") if self.uses_finetuned() else None
            digest = stable_id(*(b.digest() for b in benches), upstream)
        return BenchmarkSource(benches, digest, ", ".join(f"{b.name} ({len(b.problems)})" for b in benches))

    def contenders(self, ctx) -> list[Contender]:
        """The models to evaluate, resolved before any work (a missing fine-tune fails here)."""
        from pipeline.llm import LLMConfig

        found = [resolve(e, self.model_config, lambda: self.finetuned_dir(ctx), LLMConfig) for e in self.config.entries()]
        labels = [c.label for c in found]
        if len(set(labels)) != len(labels):
            raise PipelineError(f"stages.evaluate.models: labels must differ, got {labels}")
        return found

    def finetuned_dir(self, ctx) -> Path:
        """The directory the finetune stage saved its model to; a clear error when there is none."""
        store = ctx.stage_store(self.upstream)
        manifest = store.read_manifest()
        if manifest is None:
            raise PipelineError(f"a model is 'finetuned' but stage {self.upstream} has not finished: run it first "
                                f"(--stage {self.upstream}), or evaluate other models with "
                                "-o stages.evaluate.evaluate_finetuned=false --input humaneval")
        model_dir = Path(manifest.get("model_dir") or store.dir / "model")
        if not model_dir.is_absolute() and not model_dir.exists() and (store.dir / model_dir).exists():
            model_dir = store.dir / model_dir
        if not model_dir.exists():
            raise PipelineError(f"stage {self.upstream} finished but its model directory {model_dir} does not exist")
        return model_dir

    def preflight_checks(self, ctx) -> list:
        """The sandbox, the benchmarks, and each model's longest prompt per benchmark plus ``max_tokens``.

        A model named by path, alias or endpoint is checked with its own
        tokenizer and context; the fine-tune, which does not exist yet, with the
        base model's (its entry's settings applied). A benchmark that would be
        downloaded when the stage runs is a warning, its prompts unchecked.
        """
        from pipeline.generation.budget import prompt_checks

        checks = sandbox_preflight(self.name, f"stages.{self.name}.sandbox", self.config.sandbox)
        benches, cache = [], Path(self.run_config.work_dir) / "cache"
        for spec in self.config.benchmarks:
            url = pending_download(spec, self.config.benchmark_files, cache)
            if url:
                checks.append(Check(self.name, f"benchmark {spec}", "downloaded when the stage runs", url, WARN,
                                    f"{self.name}: benchmark {spec} is not downloaded yet ({url}): its prompts are "
                                    f"not checked (stages.{self.name}.benchmark_files.{spec} gives a local copy)"))
                continue
            try:
                bench = load_benchmark(spec, self.config.benchmark_files, cache)
                benches.append(bench.select(self.config.limit, self.config.task_ids))
            except PipelineError as exc:
                checks.append(Check(self.name, f"benchmark {spec}", "unavailable", "", FAIL, f"{self.name}: {exc}"))
        n = 1 if self.config.greedy else self.config.samples
        for entry in self.config.entries():
            try:
                contender = self.preflight_contender(entry)
            except PipelineError as exc:
                checks.append(Check(self.name, f"model {entry.label or entry.model}", "unusable", "", FAIL, str(exc)))
                continue
            for bench in benches:
                fmt, problems = contender.prompt_format, bench.problems
                prompts = [chat_messages(p) if fmt == "chat" else completion_prompt(p) for p in problems]
                checks += prompt_checks(
                    ctx, f"{self.name} ({contender.label}, {bench.name})", contender.llm_config, prompts,
                    max_tokens=self.config.max_tokens, max_tokens_key=f"stages.{self.name}.max_tokens", n=n,
                    rows=RowEstimate(len(problems), f"{len(problems)} {bench.name} problems"),
                    sample=f"{len(problems)} problems, {fmt} format")
        return checks

    def preflight_contender(self, entry) -> Contender:
        """The contender an entry names, the base model standing in for a fine-tune not trained yet."""
        from pipeline.llm import LLMConfig

        if entry.model != FINETUNED:
            return resolve(entry, self.model_config, lambda: None, LLMConfig)
        if self.model_config is None:
            raise PipelineError(f"stages.{self.name}.models: 'finetuned' needs a model section (model.backend, "
                                "model.model) for the fine-tune's tokenizer")
        base = self.model_config.model_dump()
        stand_in = {k: v for k, v in entry.settings.items() if k not in ("model", "tokenizer")}
        found = resolve(entry.model_copy(update={"settings": stand_in}), self.model_config,
                        lambda: base["model"], LLMConfig)
        return replace(found, llm_config=found.llm_config.model_copy(update={"tokenizer": base["tokenizer"]}))

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
        return {**manifest_fields(store.commit_log()), **fields}

    @staticmethod
    def row_id(contender: Contender, benchmark: str, task_id: str, sample: int) -> str:
        """The id of a (model, benchmark, problem, sample) row."""
        return stable_id(contender.label, benchmark, task_id, sample)

    def sampling(self, stop: list[str]):
        """Greedy decoding, or ``samples`` answers at ``temperature`` (the seeds are per problem: :meth:`row_seed`)."""
        from pipeline.llm import SamplingParams

        cfg = self.config
        return SamplingParams(n=1 if cfg.greedy else cfg.samples, temperature=0.0 if cfg.greedy else cfg.temperature,
                              top_p=1.0 if cfg.greedy else cfg.top_p, max_tokens=cfg.max_tokens, stop=stop)

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
                rows = [self.row(contender, bench.name, s, reason) for s, reason in zip(scored, finish)]
                stats = {f"{contender.label}_{bench.name}_passed": sum(r["passed"] for r in rows),
                         f"{contender.label}_{bench.name}_total": len(rows),
                         "cache_hits": sum(s.suites["base"].cached for s in scored)}
                ids = [r["id"] for r in rows]
                store.write_batch(stable_id(*ids), rows, self.output_schema(), [], ids, stats=stats,
                                  keep_dropped=self.run_config.keep_dropped)
                bar.update(len(batch))

    def row(self, contender: Contender, benchmark: str, scored, finish_reason: str) -> dict:
        """One output row: the answer, its program and its verdicts."""
        base, plus = scored.suites["base"], scored.suites.get("plus")
        return {"id": self.row_id(contender, benchmark, scored.answer.task_id, scored.answer.sample),
                "model": contender.label, "model_path": contender.model_path, "benchmark": benchmark,
                "task_id": scored.answer.task_id, "sample": scored.answer.sample,
                "prompt_format": contender.prompt_format, "completion": scored.answer.text,
                "finish_reason": finish_reason, "program": scored.program, "status": base.status,
                "passed": base.passed, "plus_status": plus.status if plus else None, "plus_passed": scored.plus_passed,
                "time_limit_s": base.time_limit_s, "duration_s": base.duration_s, "stderr": base.stderr,
                "program_hash": base.program_hash}

