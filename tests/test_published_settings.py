"""Each published setting of the SelfCodeAlign method (issue 11, items 2a-2j): the code does it,
the paper recipe uses it, and a user can switch it off."""

from __future__ import annotations

import pytest

from pipeline.cli import _model_config_class
from pipeline.config import build_config_model, load_config
from stages import PIPELINE
from tests.conftest import REPO

PAPER = REPO / "configs" / "selfcodealign-sc2-15b.yaml"


def paper_recipe(*overrides: str):
    """The paper recipe, validated by the project's own loader."""
    model = build_config_model({s.name: s.Config for s in PIPELINE}, _model_config_class())
    return load_config(PAPER, model, overrides)


# -- a. few-shot examples per stage ------------------------------------------------------------
def test_responses_show_one_bank_example_concepts_and_instructions_eight():
    from stages.concepts import ConceptsConfig
    from stages.instructions import InstructionsConfig
    from stages.responses import ResponsesConfig

    assert ResponsesConfig().fewshot_k == 1
    assert ConceptsConfig().fewshot_k == 8 and InstructionsConfig().fewshot_k == 8
    recipe = paper_recipe()
    assert recipe.stages.responses.fewshot_k == 1
    assert recipe.stages.concepts.fewshot_k == 8 and recipe.stages.instructions.fewshot_k == 8
    assert recipe.model.max_model_len == 16384
    assert paper_recipe("stages.responses.fewshot_k=3").stages.responses.fewshot_k == 3


# -- b. sampling temperature --------------------------------------------------------------------
def test_concepts_and_instructions_sample_at_0_7():
    from stages.concepts import ConceptsConfig
    from stages.instructions import InstructionsConfig

    assert ConceptsConfig().temperature == 0.7 and InstructionsConfig().temperature == 0.7
    recipe = paper_recipe()
    assert recipe.stages.concepts.temperature == 0.7 and recipe.stages.instructions.temperature == 0.7
    assert paper_recipe("stages.concepts.temperature=0").stages.concepts.temperature == 0


# -- e. no_todo match mode ----------------------------------------------------------------------
def _seed_file(body: str) -> dict:
    return {"id": "file-1", "path": "m.py", "content": body}


def test_no_todo_is_a_substring_match_as_published_and_word_mode_stays():
    from stages.seeds import SeedsConfig, SeedsStage

    source = (
        'def debug_total(values: list[int]) -> int:\n    """Sum for debug output."""\n    return sum(values)\n\n\n'
        'def plain(values: list[int]) -> int:\n    """Sum."""\n    return sum(values)\n'
    )
    recipe = paper_recipe()
    assert recipe.stages.seeds.todo_match == "substring" and SeedsConfig().todo_match == "substring"
    published = SeedsStage(SeedsConfig(filters=["no_todo"]), recipe).process_batch([_seed_file(source)])
    assert [r["name"] for r in published.rows] == ["plain"]
    assert [r["drop_reason"] for r in published.dropped] == ["no_todo"]
    words = SeedsStage(SeedsConfig(filters=["no_todo"], todo_match="word"), recipe).process_batch([_seed_file(source)])
    assert sorted(r["name"] for r in words.rows) == ["debug_total", "plain"]


# -- h. execution limits and main blocks that read standard input -------------------------------
STDIN_MAIN = '''Here is the solution.

```python
import sys


def double(x: int) -> int:
    return 2 * x


if __name__ == "__main__":
    value = int(sys.stdin.readline())
    print(double(value))
```
'''


def test_a_main_block_reading_stdin_is_cut_and_the_tests_then_run(tmp_path):
    import subprocess
    import sys

    from pipeline.execution import build_program
    from stages.execute import ExecuteConfig

    assert ExecuteConfig().drop_stdin_main is True
    recipe = paper_recipe()
    assert recipe.stages.execute.drop_stdin_main is True
    assert recipe.stages.execute.sandbox.memory_mb == 4096 and recipe.stages.execute.sandbox.timeout_s == 10
    program = build_program(STDIN_MAIN, "assert double(4) == 8\nprint('tests ran')", drop_stdin_main=True)
    assert "__main__" not in program and "def double" in program
    path = tmp_path / "p.py"
    path.write_text(program)
    # stdin closed: with the block kept, readline() gives "" and int("") raises before the tests.
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert done.returncode == 0 and "tests ran" in done.stdout
    kept = build_program(STDIN_MAIN, "assert double(4) == 8", drop_stdin_main=False)
    path.write_text(kept)
    assert subprocess.run([sys.executable, str(path)], stdin=subprocess.DEVNULL, capture_output=True, timeout=60).returncode != 0


def test_a_main_block_without_input_is_kept():
    from pipeline.execution import without_stdin_main

    code = 'def f():\n    return 1\n\nif __name__ == "__main__":\n    print(f())'
    assert without_stdin_main(code) == code
    reading = 'def f():\n    return 1\n\nif "__main__" == __name__:\n    x = input()\nprint("after")'
    assert without_stdin_main(reading) == 'def f():\n    return 1\n\nprint("after")'


# -- i. the corpus ----------------------------------------------------------------------------------
def test_seeds_stream_the_stack_dedup():
    from stages.seeds import SourceConfig

    source = paper_recipe().stages.seeds.source
    assert (source.kind, source.dataset, source.data_dir) == ("hub", "bigcode/the-stack-dedup", "data/python")
    assert SourceConfig().dataset == "bigcode/the-stack-dedup"


# -- c. seeds: near-dedup and the docstring judge -------------------------------------------------
def test_paper_seeds_near_dedup_and_judge_reading_the_whole_function():
    from pipeline.docstring_judge import JudgeSettings, judge_docstrings
    from tests.test_docstring_judge import ScriptedBackend

    seeds = paper_recipe().stages.seeds
    assert seeds.filters[-2:] == ["near_dedup", "docstring_judge"] and seeds.near_dedup.threshold == 0.5
    assert seeds.docstring_judge.show == "function" and JudgeSettings().show == "function"
    rows = [
        {"id": "lies", "code": 'def lies(xs):\n    """Return xs sorted ascending."""\n    return sorted(xs, reverse=True)\n'},
        {"id": "tie", "code": 'def tie(x):\n    """Return x."""\n    return x\n'},
    ]
    backend = ScriptedBackend({"reverse=True": ["no", "no", "yes"], "def tie": ["yes", "no", "yes", "no"]})
    verdicts = judge_docstrings(backend, rows, JudgeSettings(samples=3, fewshot_k=2), seed=3)
    assert verdicts["lies"] is False
    assert any("return sorted(xs, reverse=True)" in p for p in backend.prompts), "the judge sees the body"
    assert judge_docstrings(backend, rows[1:], JudgeSettings(samples=4, fewshot_k=2), seed=3) == {"tie": False}
    signature_only = ScriptedBackend({"def lies": ["yes"] * 3})
    judge_docstrings(signature_only, rows[:1], JudgeSettings(show="signature", fewshot_k=2), seed=3)
    assert "reverse=True" not in signature_only.prompts[0].rsplit("## Example", 1)[-1]
