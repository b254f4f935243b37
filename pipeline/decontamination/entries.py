"""Benchmark problems as the decontamination index sees them: needles (texts whose presence in a text means
contamination) and a haystack (the whole problem, whose containing a text means contamination).

For HumanEval: the entry point's signature + docstring (the prompt from ``def <entry_point>`` on), its
docstring alone, any helper function given in full in the prompt, and the canonical solution body; for a
JSONL benchmark, the value of each chosen field (e.g. MBPP ``code`` and ``text``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.benchmarks.humaneval import load_humaneval
from pipeline.framework.jsonl import jsonl_records


@dataclass(frozen=True)
class BenchmarkEntry:
    """One benchmark problem as seen by the index.

    Fields: task_id (e.g. ``"HumanEval/0"``, ``"mbpp/11"``); needles, raw texts
    whose presence in a text means contamination; haystack, the whole problem,
    whose containing a text means contamination.
    """

    task_id: str
    needles: tuple[str, ...]
    haystack: str


def _humaneval_needles(problem: dict) -> list[str]:
    prompt: str = problem["prompt"]
    solution: str = problem["canonical_solution"]
    entry: str = problem["entry_point"]
    needles = [solution]
    match = re.search(rf"^(?:async\s+)?def\s+{re.escape(entry)}\s*\(", prompt, re.MULTILINE)
    needles.append(prompt[match.start() :] if match else prompt)
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return needles
    lines = prompt.split("\n")
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if node.name == entry:
            doc = ast.get_docstring(node, clean=False)
            if doc:
                needles.append(doc)
        else:  # a helper given in full, e.g. is_palindrome in HumanEval/10
            start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            needles.append("\n".join(lines[start - 1 : node.end_lineno]))
    return needles


def humaneval_entries(problems: Iterable[dict] | None = None) -> list[BenchmarkEntry]:
    """Build index entries from HumanEval problems (default: `load_humaneval()`)."""
    out = []
    for problem in load_humaneval() if problems is None else problems:
        out.append(
            BenchmarkEntry(
                task_id=str(problem["task_id"]),
                needles=tuple(_humaneval_needles(problem)),
                haystack=problem["prompt"] + "\n" + problem["canonical_solution"],
            )
        )
    return out


def field_text(value: object) -> str | None:
    """A field's text: a string, or a list of strings joined by newlines (None for anything else)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    return None


def jsonl_entries(
    path: str | Path,
    fields: Sequence[str],
    *,
    id_field: str = "task_id",
    name: str | None = None,
) -> list[BenchmarkEntry]:
    """Build index entries from a JSONL benchmark file (optionally ``.gz``).

    Each line's `fields` (strings, or lists of strings joined by newlines;
    missing fields are skipped) are needles, and joined form the haystack.
    The task id is ``"<name>/<line[id_field]>"`` (name defaults to the file
    stem; the line number stands in when `id_field` is absent), e.g. for
    MBPP: ``jsonl_entries("mbpp.jsonl", ["text", "code"], name="mbpp")``.
    """
    path = Path(path)
    prefix = name or path.name.split(".")[0]
    out = []
    for lineno, row in jsonl_records(path):
        texts = [t for t in (field_text(row.get(f)) for f in fields) if t]
        if not texts:
            continue
        ident = row.get(id_field, lineno)
        task_id = ident if isinstance(ident, str) and "/" in ident else f"{prefix}/{ident}"
        out.append(BenchmarkEntry(task_id=task_id, needles=tuple(texts), haystack="\n".join(texts)))
    return out
