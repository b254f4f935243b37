"""The docstring judge: does a function's docstring say enough to re-implement it?

The model sees a few worked examples (``configs/docstring_judge.yaml``: a
signature with its docstring, then ``yes`` or ``no``) and then the seed's
signature and docstring, without its body. It answers several times at a
non-zero temperature; the seed passes when ``yes`` wins a strict majority.
A tie, or an answer that is neither yes nor no, counts against it.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Iterable

from pydantic import Field

from pipeline.config import StrictModel, not_fingerprinted
from pipeline.fewshot import DEFAULT_JUDGE_BANK, JudgeExample, load_judge_bank
from pipeline.generation import ask, row_seed
from pipeline.progress import progress
from pipeline.prompting import ParseFailure, PromptTask, section


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
    """Signature and docstring in, yes or no out."""

    preamble = (
        "Each example shows a Python function's signature and docstring, without its body, and then whether the "
        "docstring alone says enough to write the body again: what the inputs are, what comes out, and how edge "
        "cases behave. The answer is yes or no."
    )
    answer_header = "### Enough to re-implement\n"
    extra_stop = ["\n"]

    def query(self, row: dict) -> str:
        return section("Function", f"```python\n{signature_and_docstring(row['code']).rstrip()}\n```")

    def example_query(self, example: JudgeExample) -> str:  # type: ignore[override]
        return section("Function", f"```python\n{example.function.rstrip()}\n```")

    def example_answer(self, example: JudgeExample) -> str:  # type: ignore[override]
        return example.verdict

    def parse(self, answer: str) -> dict | ParseFailure:
        words = answer.strip().lower().split()
        word = words[0].strip(".,!:;\"'") if words else ""
        if word in ("yes", "no"):
            return {"yes": word == "yes"}
        return ParseFailure("unclear")


class JudgeSettings(StrictModel):
    """Settings of the docstring judge."""

    samples: int = Field(default=3, ge=1, description="Answers per function; yes needs a strict majority.")
    temperature: float = Field(default=0.7, ge=0, description="Sampling temperature of the answers.")
    fewshot_file: Path = not_fingerprinted(
        "The judge's worked examples (YAML); their content, not the path, is part of the fingerprint.",
        default=DEFAULT_JUDGE_BANK,
    )
    fewshot_k: int = Field(default=6, ge=0, description="Worked examples shown per question.")
    mode: str = Field(default="completion", pattern="^(completion|chat)$", description="completion or chat.")
    batch_size: int = not_fingerprinted("Functions per generation call.", default=16, gt=0)


def judge_docstrings(backend: Any, rows: Iterable[dict], settings: JudgeSettings, seed: int) -> dict[str, bool]:
    """``{row id: passes}`` for rows with ``id`` and ``code``, by majority over ``settings.samples`` answers."""
    from pipeline.llm import SamplingParams

    task = DocstringJudgeTask()
    bank = load_judge_bank(Path(settings.fewshot_file))
    rows = list(rows)
    verdicts: dict[str, bool] = {}
    chat = settings.mode == "chat"
    bar = progress(total=len(rows), desc="docstring judge", unit="functions")
    try:
        for start in range(0, len(rows), settings.batch_size):
            chunk = rows[start : start + settings.batch_size]
            prompts = []
            for row in chunk:
                examples = bank.sample(settings.fewshot_k, seed, "docstring_judge", row["id"])
                prompts.append(task.chat_messages(examples, row) if chat else task.completion_prompt(examples, row))
            params = SamplingParams(n=settings.samples, temperature=settings.temperature, max_tokens=4, stop=task.stop())
            seeds = [row_seed(seed, "docstring_judge", row["id"]) for row in chunk]
            for row, answers in zip(chunk, ask(backend, task, prompts, params, chat=chat, seeds=seeds)):
                yes = sum(1 for _, parsed in answers if not isinstance(parsed, ParseFailure) and parsed["yes"])
                verdicts[row["id"]] = yes * 2 > len(answers)
            bar.update(len(chunk))
    finally:
        bar.close()
    return verdicts
