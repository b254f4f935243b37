"""Reading benchmark files: HumanEval, EvalPlus (HumanEval+ / MBPP+) and MBPP, into :class:`Problem` lists.

Files are JSONL (optionally ``.gz``), a JSON array (MBPP's sanitized release),
or Parquet, one problem per record. The format is told by the first record's
fields:

``evalplus``  (``base_input``): ``task_id``, ``prompt``, ``entry_point``, ``canonical_solution``,
              ``base_input``, optional ``plus_input`` and ``atol``. The reference is
              ``prompt + canonical_solution`` (a body for HumanEval+, a whole function for
              MBPP+); suites ``base`` and ``plus`` are differential tests on those inputs
              (:mod:`pipeline.benchmarks.differential`).
``mbpp``      (``test_list``): ``task_id`` (a number becomes ``Mbpp/<n>``), the task in
              ``prompt`` (sanitized) or ``text`` (original), the reference in ``code``,
              ``test_list`` asserts, optional ``test_imports`` / ``test_setup_code``. The
              prompt is a docstring with the task and its first assert, as MBPP+ writes it;
              the entry point is the reference's function the asserts call.
``humaneval`` (``test``): ``task_id``, ``prompt``, ``entry_point``, ``test`` (defining
              ``check(candidate)``), optional ``canonical_solution``.

A record that lacks a field of its format is an error naming the file, the
record's number and the field.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from pathlib import Path

from pipeline.benchmarks.differential import differential_suite
from pipeline.benchmarks.problems import Problem
from pipeline.framework.errors import PipelineError
from pipeline.framework.jsonl import jsonl_records

REQUIRED = {
    "evalplus": ("task_id", "prompt", "entry_point", "canonical_solution", "base_input"),
    "mbpp": ("task_id", "code", "test_list"),
    "humaneval": ("task_id", "prompt", "entry_point", "test"),
}


def read_records(path: Path) -> list[dict]:
    """The records of a JSONL(.gz), JSON-array or Parquet file."""
    if not path.is_file():
        raise PipelineError(f"benchmark file {path} does not exist")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            text = fh.read()
        if text.lstrip().startswith("["):
            return json.loads(text)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"benchmark file {path}: not readable as JSONL, JSON or Parquet ({exc})") from None
    return [record for _, record in jsonl_records(path)]  # a broken line is an error naming its line



def detect_format(record: dict) -> str:
    """The format a record is in, from its fields (see the module docstring)."""
    if "base_input" in record:
        return "evalplus"
    if "test_list" in record:
        return "mbpp"
    return "humaneval"


def read_problems(path: str | Path) -> tuple[list[Problem], str]:
    """The problems of a benchmark file and the format they were in."""
    path = Path(path)
    records = read_records(path)
    if not records:
        raise PipelineError(f"benchmark file {path} holds no problems")
    fmt = detect_format(records[0])
    convert = {"evalplus": evalplus_problem, "mbpp": mbpp_problem, "humaneval": humaneval_problem}[fmt]
    problems, seen = [], set()
    for number, record in enumerate(records, 1):
        missing = [name for name in REQUIRED[fmt] if record.get(name) in (None, "")]
        if missing:
            raise PipelineError(f"{path}: problem {number} lacks {', '.join(missing)} ({fmt} format expected)")
        try:
            problem = convert(record)
        except (ValueError, TypeError, SyntaxError) as exc:
            raise PipelineError(f"{path}: problem {number} ({record.get('task_id')}): {exc}") from None
        if problem.task_id in seen:
            raise PipelineError(f"{path}: task {problem.task_id} appears twice")
        seen.add(problem.task_id)
        problems.append(problem)
    return problems, fmt


def humaneval_problem(record: dict) -> Problem:
    """A HumanEval record: its ``check(candidate)`` tests, called on the entry point."""
    entry = record["entry_point"]
    canonical = record.get("canonical_solution")
    return Problem(
        task_id=str(record["task_id"]), prompt=record["prompt"], entry_point=entry,
        suites={"base": f"{record['test']}\ncheck({entry})\n"},
        reference=record["prompt"] + canonical if canonical else None,
    )


def evalplus_problem(record: dict) -> Problem:
    """An EvalPlus record: differential suites on its base and (when given) plus inputs."""
    entry, reference = record["entry_point"], record["prompt"] + record["canonical_solution"]
    atol = float(record.get("atol") or 0.0)
    suites = {"base": differential_suite(reference, entry, _inputs(record, "base_input"), atol)}
    if record.get("plus_input") is not None:
        suites["plus"] = differential_suite(reference, entry, _inputs(record, "plus_input"), atol)
    return Problem(task_id=str(record["task_id"]), prompt=record["prompt"], entry_point=entry, suites=suites,
                   reference=reference)


def _inputs(record: dict, key: str) -> list:
    """A list of argument lists (JSON text is decoded, as some copies store it that way)."""
    value = record[key]
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, list) or not all(isinstance(args, list) for args in value):
        raise ValueError(f"{key} must be a list of argument lists")
    return value


def mbpp_problem(record: dict) -> Problem:
    """An MBPP record: its asserts (after its imports and setup), with a docstring prompt."""
    task = record.get("prompt") or record.get("text") or ""
    if not task:
        raise ValueError("lacks the task text (prompt or text)")
    tests = [str(t) for t in record["test_list"]]
    entry = mbpp_entry_point(record["code"], tests)
    setup = "\n".join([*record.get("test_imports", []), record.get("test_setup_code") or ""]).strip()
    task_id = record["task_id"]
    return Problem(
        task_id=f"Mbpp/{task_id}" if isinstance(task_id, int) or str(task_id).isdigit() else str(task_id),
        prompt=f'"""\n{task.strip()}\n{tests[0].strip()}\n"""\n', entry_point=entry,
        suites={"base": (setup + "\n" if setup else "") + "\n".join(tests) + "\n"},
        reference=record["code"], description=task.strip(),
    )


def mbpp_entry_point(code: str, tests: list[str]) -> str:
    """The reference's top-level function that the tests call (the first called one)."""
    names = [node.name for node in ast.parse(code).body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    joined = "\n".join(tests)
    for name in names:
        if re.search(rf"\b{re.escape(name)}\s*\(", joined):
            return name
    raise ValueError("no function of the reference code is called by its tests")
