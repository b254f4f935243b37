"""The few-shot example banks: their shape, and that every example's solution passes its tests.

configs/fewshot.yaml is the method's bank (every category and difficulty);
configs/fewshot-basic.yaml the small-model bank of easy functions with short
tests (the CPU demo's). Every example of both is checked the same way; each
bank has its own rules for its size and mix.

The generation stages show these examples to a base model, which imitates
them closely, so a wrong answer or a weak test in the bank turns into many
wrong answers and weak tests in the data. Each example is therefore checked
like a generated sample would be: the solution followed by its tests must run
to the end, and the tests must fail once the solution is hollowed out.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from pipeline.analysis.pysource import extract_functions, uses_banned_module

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
BANK = CONFIGS / "fewshot.yaml"
BASIC_BANK = CONFIGS / "fewshot-basic.yaml"
REQUIRED_KEYS = ("id", "seed", "concepts", "properties", "instruction", "response", "tests")
CATEGORIES = ("function", "class", "program")
DIFFICULTIES = ("easy", "medium", "hard")
FENCE = re.compile(r"```python\n(.*?)^\s*```", re.DOTALL | re.MULTILINE)
SENTINEL = "__FEWSHOT_TESTS_RAN_TO_THE_END__"
# The response-stage prompt shows instruction + response + tests of k examples
# (k = 8 by default); at about 3.5 characters per token for code and prose,
# 8 average examples must stay within ~8k tokens.
MAX_MEAN_PROMPT_CHARS = 8_000 * 3.5 / 8
MAX_PROMPT_CHARS = 5_000


@lru_cache(maxsize=2)
def load_bank(path: Path = BANK) -> dict:
    return yaml.safe_load(path.read_text())


def examples(path: Path = BANK) -> list[dict]:
    return load_bank(path)["examples"]


def example_params():
    """Every example of both banks, with the shortest solution and seed its bank allows."""
    return [pytest.param(ex, limits, id=str(ex.get("id")))
            for path, limits in ((BANK, (5, 5)), (BASIC_BANK, (1, 3))) for ex in examples(path)]


def solution_code(example: dict) -> str:
    (block,) = FENCE.findall(example["response"])
    return block


def run_python(program: str) -> subprocess.CompletedProcess:
    """Run ``program`` as a script, with empty standard input (programs call main() on import)."""
    return subprocess.run(
        [sys.executable, "-c", program],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=10,
    )


class _StubBodies(ast.NodeTransformer):
    """Replace the body of every function and method with ``return None``."""

    def visit_FunctionDef(self, node):
        node.body = [ast.Return(value=ast.Constant(value=None))]
        return node

    visit_AsyncFunctionDef = visit_FunctionDef


# -- the bank as a whole ------------------------------------------------------


def test_bank_loads_with_version_and_enough_examples():
    bank = load_bank()
    assert bank["version"] == 1
    assert isinstance(bank["examples"], list)
    assert len(bank["examples"]) >= 24


def test_ids_are_unique_and_descriptive():
    ids = [ex["id"] for ex in examples()]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    for example_id in ids:
        assert re.fullmatch(r"fs\d{2}-[a-z0-9]+(?:-[a-z0-9]+)*", example_id), example_id


def test_every_category_and_difficulty_is_well_represented():
    categories = Counter(ex["properties"]["category"] for ex in examples())
    difficulties = Counter(ex["properties"]["difficulty"] for ex in examples())
    for category in CATEGORIES:
        assert categories[category] >= 4, categories
    for difficulty in DIFFICULTIES:
        assert difficulties[difficulty] >= 4, difficulties
    # every category spans more than one difficulty
    for category in CATEGORIES:
        levels = {ex["properties"]["difficulty"] for ex in examples() if ex["properties"]["category"] == category}
        assert len(levels) >= 2, (category, levels)


def test_prompt_budget():
    sizes = [len(ex["instruction"]) + len(ex["response"]) + len(ex["tests"]) for ex in examples()]
    assert sum(sizes) / len(sizes) <= MAX_MEAN_PROMPT_CHARS, sum(sizes) / len(sizes)
    assert max(sizes) <= MAX_PROMPT_CHARS, max(sizes)


def test_the_basic_bank_holds_short_easy_functions():
    basic = load_bank(BASIC_BANK)
    assert basic["version"] == 1 and len(basic["examples"]) >= 8
    ids = [ex["id"] for ex in basic["examples"]]
    assert len(ids) == len(set(ids)) and all(re.fullmatch(r"fb\d{2}-[a-z0-9]+(?:-[a-z0-9]+)*", i) for i in ids)
    for ex in basic["examples"]:
        assert ex["properties"] == {"category": "function", "difficulty": "easy", "language": "Python"}, ex["id"]
        assert sum(isinstance(n, ast.Assert) for n in ast.walk(ast.parse(ex["tests"]))) <= 3, ex["id"]
        assert len(ex["instruction"]) + len(ex["response"]) + len(ex["tests"]) <= 1000, ex["id"]


# -- each example ---------------------------------------------------------------


@pytest.mark.parametrize("example,limits", example_params())
def test_keys_present_and_values_valid(example, limits):
    assert set(example) == set(REQUIRED_KEYS), set(example) ^ set(REQUIRED_KEYS)
    for key in REQUIRED_KEYS:
        assert example[key], f"{key} is empty"
    for key in ("id", "seed", "instruction", "response", "tests"):
        assert isinstance(example[key], str) and example[key].strip(), key
    concepts = example["concepts"]
    assert isinstance(concepts, list) and 3 <= len(concepts) <= 6, concepts
    assert all(isinstance(c, str) and c.strip() for c in concepts), concepts
    assert len(set(concepts)) == len(concepts), concepts
    properties = example["properties"]
    assert set(properties) == {"category", "difficulty", "language"}, properties
    assert properties["category"] in CATEGORIES
    assert properties["difficulty"] in DIFFICULTIES
    assert properties["language"] == "Python"


@pytest.mark.parametrize("example,limits", example_params())
def test_seed_is_one_documented_function_the_seeds_stage_would_keep(example, limits):
    tree = ast.parse(example["seed"])
    assert len(tree.body) == 1, "the seed must be a single top-level statement"
    (node,) = tree.body
    assert isinstance(node, ast.FunctionDef), type(node).__name__
    assert ast.get_docstring(node), "the seed has no docstring"
    assert limits[1] <= len(example["seed"].strip().splitlines()) <= 30
    # The same facts the seeds stage filters on (see stages/seeds.py).
    (info,) = extract_functions(example["seed"])
    assert info.returns_value
    assert info.num_args >= 1
    assert not info.has_todo
    assert not uses_banned_module(info)


@pytest.mark.parametrize("example,limits", example_params())
def test_response_explains_then_gives_one_python_block(example, limits):
    response = example["response"]
    assert len(FENCE.findall(response)) == 1
    assert response.count("```") == 2, "no other fenced blocks"
    explanation = response[: response.index("```python")]
    assert explanation.strip(), "the response opens with a short explanation"
    code = solution_code(example)
    tree = ast.parse(code)
    assert not any(isinstance(node, ast.Assert) for node in ast.walk(tree)), "tests belong in the tests block"
    assert limits[0] <= len(code.strip().splitlines()) <= 80
    if example["properties"]["category"] == "class":
        assert any(isinstance(node, ast.ClassDef) for node in tree.body)
    if example["properties"]["category"] == "program":
        names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert "main" in names
        assert "__main__" in code, "a program has an entry-point guard"


@pytest.mark.parametrize("example,limits", example_params())
def test_tests_block_is_plain_python_with_asserts(example, limits):
    tests = example["tests"]
    assert "```" not in tests
    tree = ast.parse(tests)
    asserts = sum(isinstance(node, ast.Assert) for node in ast.walk(tree))
    assert asserts >= 3, asserts


@pytest.mark.parametrize("example,limits", example_params())
def test_solution_passes_its_tests(example, limits):
    program = solution_code(example) + "\n" + example["tests"] + f"\nprint({SENTINEL!r})\n"
    result = run_python(program)
    assert result.returncode == 0, result.stderr[-2000:]
    # Passing means the tests ran to their end, not merely exit status 0.
    assert result.stdout.rstrip().endswith(SENTINEL), result.stdout[-2000:]


@pytest.mark.parametrize("example,limits", example_params())
def test_tests_fail_against_a_hollow_solution(example, limits):
    tree = _StubBodies().visit(ast.parse(solution_code(example)))
    hollow = ast.unparse(ast.fix_missing_locations(tree))
    program = hollow + "\n" + example["tests"] + f"\nprint({SENTINEL!r})\n"
    result = run_python(program)
    assert result.returncode != 0 or SENTINEL not in result.stdout, "the tests accept a solution that does nothing"
