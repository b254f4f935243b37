"""The evaluate stage's preflight: the sandbox, the benchmarks, and each model's longest prompt against its context.

A model named by path, alias or endpoint is checked with its own tokenizer and
context; the fine-tune, which does not exist yet, with the base model's (its
entry's settings applied). A benchmark that would be downloaded when the stage
runs is a warning, its prompts unchecked.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.benchmarks.answers import chat_messages, completion_prompt
from pipeline.benchmarks.catalog import load_benchmark, pending_download
from pipeline.benchmarks.contenders import FINETUNED, Contender, ModelEntry, resolve
from pipeline.execution.verdicts import sandbox_preflight
from pipeline.framework.errors import PipelineError
from pipeline.framework.preflight import FAIL, WARN, Check, PreflightContext, RowEstimate


def evaluation_checks(ctx: PreflightContext, stage: str, config: Any, model_config: Any) -> list[Check]:
    """The sandbox, the benchmarks, and each model's longest prompt per benchmark plus ``max_tokens``."""
    from pipeline.generation.budget import prompt_checks

    checks = sandbox_preflight(stage, f"stages.{stage}.sandbox", config.sandbox)
    benches, cache = [], ctx.work_dir / "cache"
    for spec in config.benchmarks:
        url = pending_download(spec, config.benchmark_files, cache)
        if url:
            checks.append(Check(stage, f"benchmark {spec}", "downloaded when the stage runs", url, WARN,
                                f"{stage}: benchmark {spec} is not downloaded yet ({url}): its prompts are "
                                f"not checked (stages.{stage}.benchmark_files.{spec} gives a local copy)"))
            continue
        try:
            benches.append(load_benchmark(spec, config.benchmark_files, cache).select(config.limit, config.task_ids))
        except PipelineError as exc:
            checks.append(Check(stage, f"benchmark {spec}", "unavailable", "", FAIL, f"{stage}: {exc}"))
    n = 1 if config.greedy else config.samples
    for entry in config.entries():
        try:
            contender = stand_in_contender(entry, model_config, stage)
        except PipelineError as exc:
            checks.append(Check(stage, f"model {entry.label or entry.model}", "unusable", "", FAIL, str(exc)))
            continue
        for bench in benches:
            fmt, problems = contender.prompt_format, bench.problems
            prompts = [chat_messages(p) if fmt == "chat" else completion_prompt(p) for p in problems]
            checks += prompt_checks(
                ctx, f"{stage} ({contender.label}, {bench.name})", contender.llm_config, prompts,
                max_tokens=config.max_tokens, max_tokens_key=f"stages.{stage}.max_tokens", n=n,
                rows=RowEstimate(len(problems), f"{len(problems)} {bench.name} problems"),
                sample=f"{len(problems)} problems, {fmt} format")
    return checks


def stand_in_contender(entry: ModelEntry, model_config: Any, stage: str) -> Contender:
    """The contender an entry names, the base model standing in for a fine-tune not trained yet."""
    from pipeline.llm import LLMConfig

    if entry.model != FINETUNED:
        return resolve(entry, model_config, lambda: None, LLMConfig)
    if model_config is None:
        raise PipelineError(f"stages.{stage}.models: 'finetuned' needs a model section (model.backend, "
                            "model.model) for the fine-tune's tokenizer")
    base = model_config.model_dump()
    stand_in = {k: v for k, v in entry.settings.items() if k not in ("model", "tokenizer")}
    found = resolve(entry.model_copy(update={"settings": stand_in}), model_config, lambda: base["model"], LLMConfig)
    return replace(found, llm_config=found.llm_config.model_copy(update={"tokenizer": base["tokenizer"]}))
