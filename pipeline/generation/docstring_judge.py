"""The docstring judge: is a function's docstring a good description of its code?

The model sees a few worked examples (``configs/docstring_judge.yaml``: a
whole function, then ``yes`` or ``no``) and then the seed's whole function
(signature, docstring and body, as published), so it can reject a docstring
that says too little or does not describe what the body does. ``show:
signature`` shows only the signature and docstring instead. The model answers
several times at a non-zero temperature; the seed passes when ``yes`` wins a
strict majority. A tie, or an answer that is neither yes nor no, counts
against it.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import Field

from pipeline.framework.config import ExistingFile, StrictModel, not_fingerprinted
from pipeline.framework.preflight import Check, PreflightContext, RowEstimate
from pipeline.framework.progress import progress
from pipeline.generation.fewshot import DEFAULT_JUDGE_BANK, JudgeExample, load_judge_bank
from pipeline.generation.prompting import ParseFailure, PromptTask, code_section
from pipeline.generation.stage import ask, row_seed


def signature_and_docstring(code: str) -> str:
    """The function's header lines through the end of its docstring (the body left out)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    func = tree.body[0] if tree.body else None
    if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)) or not func.body:
        return code
    first = min([func.lineno, *(d.lineno for d in func.decorator_list)])
    return "\n".join(code.splitlines()[first - 1 : func.body[0].end_lineno])


class DocstringJudgeTask(PromptTask):
    """A whole function in, yes or no out: does its docstring describe its code well?"""

    preamble = (
        "Each example shows a whole Python function and then whether its docstring is a good description of "
        "the code: it says what the inputs are, what comes out and how edge cases behave, and it agrees with "
        "what the body really does. The answer is yes or no."
    )
    answer_header = "### Docstring describes the code\n"
    extra_stop = ["\n"]

    def shown(self, code: str) -> str:
        """The part of a function the judge sees: all of it."""
        return code

    def query(self, row: dict) -> str:
        return code_section("Function", self.shown(row["code"]))

    def example_query(self, example: JudgeExample) -> str:  # type: ignore[override]
        return code_section("Function", self.shown(example.function))

    def example_answer(self, example: JudgeExample) -> str:  # type: ignore[override]
        return example.verdict

    def parse(self, answer: str) -> dict | ParseFailure:
        words = answer.strip().lower().split()
        word = words[0].strip(".,!:;\"'") if words else ""
        if word in ("yes", "no"):
            return {"yes": word == "yes"}
        return ParseFailure("unclear")


class SignatureJudgeTask(DocstringJudgeTask):
    """Signature and docstring in (the body left out), yes or no out: is the docstring enough to re-implement it?"""

    preamble = (
        "Each example shows a Python function's signature and docstring, without its body, and then whether the "
        "docstring alone says enough to write the body again: what the inputs are, what comes out, and how edge "
        "cases behave. The answer is yes or no."
    )
    answer_header = "### Enough to re-implement\n"

    def shown(self, code: str) -> str:
        """The part of a function the judge sees: its header through its docstring."""
        return signature_and_docstring(code)


JUDGE_TASKS = {"function": DocstringJudgeTask, "signature": SignatureJudgeTask}


class JudgeSettings(StrictModel):
    """Settings of the docstring judge."""

    show: Literal["function", "signature"] = Field(
        default="function",
        description="What the judge sees: the whole function (as published: it can reject a docstring that "
        "does not match the body) or only its signature and docstring.",
    )
    samples: int = Field(default=3, ge=1, description="Answers per function; yes needs a strict majority.")
    temperature: float = Field(default=0.7, ge=0, description="Sampling temperature of the answers.")
    fewshot_file: ExistingFile = not_fingerprinted(
        "The judge's worked examples (YAML); their content, not the path, is part of the fingerprint.",
        default=DEFAULT_JUDGE_BANK,
    )
    fewshot_k: int = Field(default=6, ge=0, description="Worked examples shown per question.")
    mode: str = Field(default="completion", pattern="^(completion|chat)$", description="completion or chat.")
    batch_size: int = not_fingerprinted("Functions per generation call.", default=16, gt=0)


ANSWER_TOKENS = 4
"""Most tokens of one answer (yes or no)."""
JUDGE_STEP = "docstring_judge"
"""The step name in the judge's few-shot draws and sampling seeds (as a generation stage uses its own name)."""


def judge_prompt(settings: JudgeSettings, seed: int, row: dict):
    """The judge's prompt (text, or chat messages in chat mode) for one function row (``id``, ``code``).

    Built as a generation stage builds its prompts: ``fewshot_k`` bank examples drawn by the run seed, the
    step and the row id, then the task rendered in the configured mode.
    """
    examples = load_judge_bank(Path(settings.fewshot_file)).sample(settings.fewshot_k, seed, JUDGE_STEP, row["id"])
    return JUDGE_TASKS[settings.show]().render(examples, row, chat=settings.mode == "chat")


def judge_bank_rows(settings: JudgeSettings) -> list[dict]:
    """The judge bank's functions as function rows (``id``, ``code``): stand-ins before any seed exists."""
    return [{"id": e.id, "code": e.function} for e in load_judge_bank(Path(settings.fewshot_file)).examples]


def judge_preflight(ctx: PreflightContext, stage: str, llm_config: Any, settings: JudgeSettings, seed: int,
                    rows: list[dict], where: str, count: RowEstimate) -> list[Check]:
    """Preflight checks of the judge: its longest prompt (``rows``, else the bank's functions) and its budget."""
    from pipeline.generation.budget import prompt_checks

    if not rows:
        rows = judge_bank_rows(settings)
        where = f"{len(rows)} bank functions as queries"
    prompts = [judge_prompt(settings, seed, row) for row in rows]
    return prompt_checks(ctx, f"{stage} (docstring judge)", llm_config, prompts, max_tokens=ANSWER_TOKENS,
                         max_tokens_key="the judge's answer", n=settings.samples, rows=count, sample=where)


def judge_docstrings(backend: Any, rows: Iterable[dict], settings: JudgeSettings, seed: int) -> dict[str, bool]:
    """``{row id: passes}`` for rows with ``id`` and ``code``, by majority over ``settings.samples`` answers."""
    from pipeline.llm import SamplingParams

    task = JUDGE_TASKS[settings.show]()
    rows = list(rows)
    verdicts: dict[str, bool] = {}
    chat = settings.mode == "chat"
    bar = progress(total=len(rows), desc="docstring judge", unit="functions")
    try:
        for start in range(0, len(rows), settings.batch_size):
            chunk = rows[start : start + settings.batch_size]
            prompts = [judge_prompt(settings, seed, row) for row in chunk]
            params = SamplingParams(n=settings.samples, temperature=settings.temperature, max_tokens=ANSWER_TOKENS,
                                    stop=task.stop())
            seeds = [row_seed(seed, JUDGE_STEP, row["id"]) for row in chunk]
            for row, answers in zip(chunk, ask(backend, task, prompts, params, chat=chat, seeds=seeds)):
                yes = sum(1 for _, parsed in answers if not isinstance(parsed, ParseFailure) and parsed["yes"])
                verdicts[row["id"]] = yes * 2 > len(answers)
            bar.update(len(chunk))
    finally:
        bar.close()
    return verdicts
