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
