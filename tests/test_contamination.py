"""Tests for pipeline.decontamination.index: HumanEval / JSONL benchmark decontamination."""

from __future__ import annotations

import json
import sysconfig
import textwrap
from pathlib import Path

import pytest

from pipeline.analysis.pysource import UnparsableSource, extract_functions
from pipeline.benchmarks.humaneval import load_humaneval
from pipeline.decontamination.entries import BenchmarkEntry, humaneval_entries, jsonl_entries
from pipeline.decontamination.index import BenchmarkIndex
from pipeline.framework.text import normalize_whitespace


@pytest.fixture(scope="module")
def humaneval() -> list[dict]:
    """The HumanEval problems from the installed package."""
    return load_humaneval()


@pytest.fixture(scope="module")
def index() -> BenchmarkIndex:
    """HumanEval-only index."""
    return BenchmarkIndex.build()


def test_load_humaneval(humaneval):
    assert len(humaneval) == 164
    assert humaneval[0]["task_id"] == "HumanEval/0"
    assert {"prompt", "canonical_solution", "entry_point", "test"} <= set(humaneval[0])


def test_normalize_whitespace():
    assert normalize_whitespace("  a\t\tb\n\n  c  ") == "a b c"
    assert normalize_whitespace("\n \t") == ""


def test_planted_canonical_function_detected(index, humaneval):
    for problem in humaneval:
        planted = (
            "import math\n\n\ndef unrelated(a, b):\n    return math.hypot(a, b)\n\n\n"
            + problem["prompt"]
            + problem["canonical_solution"]
            + "\n\nclass After:\n    pass\n"
        )
        assert index.contains_benchmark(planted) == problem["task_id"]


def test_reindented_solution_detected(index, humaneval):
    problem = humaneval[10]  # make_palindrome: long solution
    # Same code, different whitespace: tabs and extra blank lines.
    text = problem["canonical_solution"].replace("    ", "\t").replace("\n", "\n\n")
    assert index.contains_benchmark("# header\n" + text) == "HumanEval/10"


def test_signature_and_docstring_without_prompt_imports(index, humaneval):
    problem = humaneval[0]  # prompt starts with "from typing import List"
    start = problem["prompt"].index("def has_close_elements")
    text = problem["prompt"][start:] + "    return False\n"
    assert index.contains_benchmark(text) == "HumanEval/0"


def test_text_inside_benchmark_detected(index, humaneval):
    problem = humaneval[10]
    fragment = problem["canonical_solution"].split("\n")
    piece = "\n".join(fragment[3:8])
    assert len(normalize_whitespace(piece)) >= 50
    assert index.contains_benchmark(piece) == "HumanEval/10"


def test_short_texts_and_trivial_solutions_do_not_match(index):
    assert index.contains_benchmark("return x") is None
    assert index.contains_benchmark("") is None
    assert index.contains_benchmark("def f(x):\n    return x + 1\n") is None
    # HumanEval/23 (strlen) has solution "return len(string)": too short to count.
    assert index.contains_benchmark("def g(string):\n    return len(string)\n") is None


def _stdlib_sources(limit: int) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(root.glob("*.py"))[:limit]:
        try:
            out.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    return out


def test_unrelated_stdlib_functions_not_flagged(index):
    texts = []
    for source in _stdlib_sources(80):
        texts.append(source)
        try:
            texts.extend(f.code for f in extract_functions(source))
        except UnparsableSource:
            continue
    assert len(texts) > 200
    flagged = [t[:80] for t in texts if index.contains_benchmark(t)]
    assert flagged == []


def test_jsonl_benchmark(tmp_path):
    rows = [
        {
            "task_id": 11,
            "text": "Write a python function to remove first and last occurrence of a given character from the string.",
            "code": textwrap.dedent(
                """\
                def remove_Occ(s,ch):
                    for i in range(len(s)):
                        if (s[i] == ch):
                            s = s[0 : i] + s[i + 1:]
                            break
                    return s
                """
            ),
            "test_list": ['assert remove_Occ("hello","l") == "heo"'],
        },
        {"task_id": 12, "text": "short"},
    ]
    path = tmp_path / "mbpp.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    entries = jsonl_entries(path, ["text", "code"])
    assert [e.task_id for e in entries] == ["mbpp/11", "mbpp/12"]
    index = BenchmarkIndex.build([(path, ["text", "code"])])
    assert len(index) == 164 + 2
    planted = "import re\n\n" + rows[0]["code"].replace("\n", "\n\n") + "\nprint(1)\n"
    assert index.contains_benchmark(planted) == "mbpp/11"
    instruction = "Please solve: " + rows[0]["text"] + " Use Python."
    assert index.contains_benchmark(instruction) == "mbpp/11"
    assert index.contains_benchmark("short") is None


def test_custom_entries_and_min_chars():
    entry = BenchmarkEntry(task_id="t/1", needles=("alpha beta gamma",), haystack="alpha beta gamma delta")
    loose = BenchmarkIndex([entry], min_chars=5)
    assert loose.contains_benchmark("x alpha  beta\ngamma y") == "t/1"
    assert loose.contains_benchmark("beta gamma delta") == "t/1"  # inside the haystack
    assert loose.contains_benchmark("alpha beta delta") is None  # neither rule holds
    strict = BenchmarkIndex([entry])  # default 50 chars: nothing here is long enough
    assert strict.contains_benchmark("x alpha beta gamma y") is None


def test_humaneval_entries_include_helpers(humaneval):
    entry = {e.task_id: e for e in humaneval_entries(humaneval)}["HumanEval/10"]
    assert any(n.lstrip().startswith("def is_palindrome") for n in entry.needles)
    assert any(n.lstrip().startswith("def make_palindrome") for n in entry.needles)
