"""Preflight checks for anything that prompts the model: prompt size against the context, and token budget.

Shared by the generation stages, the seeds' docstring judge and the evaluate
stage. Each hands over prompts rendered by its own prompt code; this module
counts their tokens with the model's tokenizer (or estimates them, see
:mod:`pipeline.llm.tokens`), checks that the longest prompt plus
``max_tokens`` fits the model's context, and sizes the generation budget:
``prompts x n x (mean prompt + max_tokens)`` tokens.
"""

from __future__ import annotations

from typing import Any, Sequence

from pipeline.framework.preflight import FAIL, INFO, OK, WARN, Check, PreflightContext, RowEstimate


def _counter(ctx: PreflightContext, llm_config: Any):
    from pipeline.llm.tokens import load_token_counter

    return ctx.cached(("tokens", llm_config.tokenizer or llm_config.model, llm_config.cache_dir, llm_config.dtype),
                      lambda: load_token_counter(llm_config))


def _context(ctx: PreflightContext, llm_config: Any) -> tuple[int | None, str]:
    from pipeline.llm.tokens import context_length

    return ctx.cached(("context", llm_config.model, llm_config.max_model_len), lambda: context_length(llm_config))


def tokenizer_check(ctx: PreflightContext, llm_config: Any) -> Check:
    """A row saying which tokenizer counts (or that counts are estimated, and why); shown once per model."""
    counter = _counter(ctx, llm_config)
    return Check("model", f"tokenizer of {llm_config.model}", counter.source, "", OK if counter.exact else INFO)


def prompt_checks(ctx: PreflightContext, stage: str, llm_config: Any, prompts: Sequence[Any], *, max_tokens: int,
                  max_tokens_key: str, n: int, rows: RowEstimate, sample: str) -> list[Check]:
    """Check the longest of ``prompts`` plus ``max_tokens`` against the context, and size the budget.

    ``sample`` says where the prompts came from (shown in the table); ``rows``
    estimates how many prompts the whole run sends, each ``n`` times.
    """
    if llm_config is None:
        return [Check(stage, "model section", "missing", "model.backend, model.model", FAIL,
                      f"{stage}: generates text but the config has no model section (model.backend, model.model)")]
    if not prompts:
        return [Check(stage, "prompts", "none to render", "", WARN, f"{stage}: no prompt could be rendered to check")]
    counter = _counter(ctx, llm_config)
    checks = [tokenizer_check(ctx, llm_config)] if ctx.first_time(("tokenizer row", id(counter))) else []
    counts = [counter.count(p) for p in prompts]
    longest, mean = max(counts), sum(counts) / len(counts)
    need = longest + max_tokens
    context, where = _context(ctx, llm_config)
    name = f"prompt + max_tokens ({sample})"
    measured = f"{longest:,} + {max_tokens:,} = {need:,} tokens ({counter.kind})"
    if context is None:
        checks.append(Check(stage, name, measured, where, WARN,
                            f"{stage}: cannot check the prompt size: the context of {llm_config.model} is {where}"))
    elif need > context:
        checks.append(Check(
            stage, name, measured, f"{context:,} ({where})", FAIL,
            f"{stage}: longest prompt {longest:,} tokens ({counter.kind}) + {max_tokens_key} {max_tokens:,} = "
            f"{need:,} > {where} {context:,}",
        ))
    else:
        checks.append(Check(stage, name, measured, f"{context:,} ({where})", OK))
    checks.append(budget_check(stage, rows, n, mean, max_tokens))
    return checks


def budget_check(stage: str, rows: RowEstimate, n: int, mean_prompt: float, max_tokens: int) -> Check:
    """The stage's generation budget, ``prompts x n x (mean prompt + max_tokens)``, as an info row."""
    per_prompt = n * (mean_prompt + max_tokens)
    formula = f"x {n} x ({round(mean_prompt):,} + {max_tokens:,})"
    if rows.count is not None:
        tokens = round(rows.count * per_prompt)
        return Check(stage, "generation budget", f"{rows.count:,} prompts {formula} = {tokens:,} tokens",
                     f"prompts: {rows.how}", INFO, budget=tokens)
    per_source = rows.per_source * per_prompt
    return Check(stage, "generation budget", f"{rows.per_source:g} per {rows.source} row {formula} = "
                 f"{round(per_source):,} tokens per {rows.source} row", f"prompts: {rows.how}", INFO,
                 budget_per_source=per_source, budget_source=rows.source)
