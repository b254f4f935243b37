"""concepts (S->C): the base model names the programming concepts of each seed function.

The prompt shows k examples from the few-shot bank (default 8, chosen by the
run seed and the seed's id; sampled at temperature 0.7, as published), each a function followed by its concepts as a
list, then the seed function; the model writes the seed's list. The answer is
read as its leading ``- concept`` lines; an answer with none is dropped as
``no_concepts``, one cut by the token limit as ``truncated``.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from pipeline.framework.ids import stable_id
from pipeline.generation.fewshot import FewShotExample
from pipeline.generation.prompting import ParseFailure, PromptTask, code_section
from pipeline.generation.stage import GenerationConfig, GenerationStage

MAX_CONCEPTS = 12


class ConceptsTask(PromptTask):
    """Seed function in, list of concepts out."""

    preamble = (
        "Each example below shows a Python function and then the programming concepts it relies on: "
        "the techniques, data structures, algorithms and language features a programmer needs to write it, "
        "one short phrase per line."
    )
    answer_header = "### Concepts\n"
    extra_stop = ["\n### "]

    def query(self, row: dict) -> str:
        return code_section("Snippet", row["code"])

    def example_query(self, example: FewShotExample) -> str:
        return code_section("Snippet", example.seed)

    def example_answer(self, example: FewShotExample) -> str:
        return "\n".join(f"- {concept}" for concept in example.concepts)

    def parse(self, answer: str) -> dict | ParseFailure:
        concepts = []
        for line in answer.strip().splitlines():
            line = line.strip()
            if not line.startswith(("- ", "* ")):
                break
            phrase = line[2:].strip()
            if phrase and phrase not in concepts:
                concepts.append(phrase)
        if not concepts:
            return ParseFailure("no_concepts")
        return {"concepts": concepts[:MAX_CONCEPTS]}


class ConceptsConfig(GenerationConfig):
    """Settings of the concepts stage."""

    max_tokens: int = Field(default=256, ge=1, description="Most new tokens per completion.")


class ConceptsStage(GenerationStage):
    """Name each seed's concepts."""

    name = "concepts"
    title = "Concepts named by the model for each seed (S->C)"
    upstream = "seeds"
    Config = ConceptsConfig
    task = ConceptsTask()
    input_columns = {"id": "seed id", "code": "the seed function's source"}
    output_columns = {
        "id": (pa.string(), "row id: hash of the seed id and the concepts"),
        "seed_id": (pa.string(), "the seed this row comes from"),
        "seed": (pa.string(), "the seed function's source"),
        "concepts": (pa.list_(pa.string()), "concepts the model named"),
    }

    def output_row(self, row: dict, fields: dict, index: int) -> dict:
        return {
            "id": stable_id(row["id"], index, *fields["concepts"]),
            "seed_id": row["id"],
            "seed": row["code"],
            "concepts": fields["concepts"],
        }
