"""instructions (C->I): the base model writes a coding task from each seed's concepts.

For each seed a category (function 50%, class 25%, program 25%) and a
difficulty (easy, medium, hard, equally likely) are drawn from the run seed
and the seed's id, so reruns draw the same. The prompt shows k bank examples
(concepts and properties, then the instruction written from them) and ends
with this seed's concepts and properties; the model writes the instruction.
In the chat form (instruct models) the same examples are turns of a plain
request: "Concepts: ... Write one easy exercise about a Python function that
uses these concepts", answered by the instruction alone; asked with sections,
the 0.5B demo model wrote a solution instead in most answers.
An instruction shorter than ``min_chars`` is dropped as ``too_short``, one
that opens with a code block instead of stating the task (small instruct
models write a solution there) as ``starts_with_code``.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field, field_validator

from pipeline.framework.ids import seeded_random, stable_id
from pipeline.generation.fewshot import Category, Difficulty, FewShotExample
from pipeline.generation.prompting import ParseFailure, PromptTask, section
from pipeline.generation.stage import GenerationConfig, GenerationStage


def _properties(category: str, difficulty: str, language: str = "Python") -> str:
    return section("Properties", f"category: {category}\ndifficulty: {difficulty}\nlanguage: {language}")


def _concept_list(concepts: list[str]) -> str:
    return section("Concepts", "\n".join(f"- {c}" for c in concepts))


_WHAT = {"function": "a Python function", "class": "a Python class",
         "program": "a Python program that reads standard input and writes standard output"}


def _request(concepts: list[str], category: str, difficulty: str) -> str:
    """The chat form's request: the concepts, then what kind of exercise to write, in plain words."""
    return (f"Concepts: {'; '.join(concepts)}.\n"
            f"Write one {difficulty} exercise about {_WHAT[category]} that uses these concepts. "
            f"Write only the exercise.")


class InstructionTask(PromptTask):
    """Concepts and properties in, an instruction out."""

    preamble = (
        "Each example below lists programming concepts and the properties of a task (its category, "
        "difficulty and language), then a self-contained coding instruction that exercises those concepts. "
        "The instruction states inputs, outputs and edge cases precisely."
    )
    answer_header = "### Instruction\n"
    extra_stop = ["\n### "]
    chat_preamble = (
        "You write short, self-contained programming exercises from a list of concepts. An exercise names what "
        "to write (a function's name and arguments, a class, or a program), says what it returns or prints and "
        "how it treats edge cases, and gives one example with its result. You never write the solution."
    )
    min_chars = 20

    def query(self, row: dict) -> str:
        return _concept_list(row["concepts"]) + _properties(row["category"], row["difficulty"])

    def example_query(self, example: FewShotExample) -> str:
        p = example.properties
        return _concept_list(example.concepts) + _properties(p.category, p.difficulty, p.language)

    def example_answer(self, example: FewShotExample) -> str:
        return example.instruction

    def chat_query(self, row: dict) -> str:
        return _request(row["concepts"], row["category"], row["difficulty"])

    def chat_example_query(self, example: FewShotExample) -> str:
        return _request(example.concepts, example.properties.category, example.properties.difficulty)

    def chat_example_answer(self, example: FewShotExample) -> str:
        return example.instruction

    def parse(self, answer: str) -> dict | ParseFailure:
        text = answer.strip()
        if len(text) < self.min_chars:
            return ParseFailure("too_short")
        if text.startswith("```"):  # code where the task should be stated: small models write a solution instead
            return ParseFailure("starts_with_code")
        return {"instruction": text}


class InstructionsConfig(GenerationConfig):
    """Settings of the instructions stage."""

    categories: dict[Category, float] = Field(
        default_factory=lambda: {"function": 0.5, "class": 0.25, "program": 0.25},
        description="Category weights, drawn once per seed.",
    )
    difficulties: list[Difficulty] = Field(
        default_factory=lambda: ["easy", "medium", "hard"], description="Difficulties, drawn uniformly per seed."
    )

    @field_validator("categories")
    @classmethod
    def _positive_weights(cls, value: dict) -> dict:
        if not value or any(w < 0 for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError("give at least one category with a positive weight, none negative")
        return value


class InstructionsStage(GenerationStage):
    """Write an instruction for each seed's concepts."""

    name = "instructions"
    title = "An instruction written from each seed's concepts (C->I)"
    version = "3"  # chat prompts ask in plain words; code-first answers dropped
    upstream = "concepts"
    Config = InstructionsConfig
    task = InstructionTask()
    input_columns = {"id": "concepts row id", "seed_id": "seed id", "concepts": "concepts named for the seed"}
    output_columns = {
        "id": (pa.string(), "row id: hash of the concepts row id and the instruction"),
        "seed_id": (pa.string(), "the seed this row comes from"),
        "concepts_id": (pa.string(), "the concepts row it was written from"),
        "concepts": (pa.list_(pa.string()), "the concepts"),
        "category": (pa.string(), "function, class or program"),
        "difficulty": (pa.string(), "easy, medium or hard"),
        "instruction": (pa.string(), "the instruction the model wrote"),
    }

    def draw_properties(self, seed_id: str) -> tuple[str, str]:
        """The category and difficulty of a seed: a reproducible draw from the run seed and the seed id."""
        rng = seeded_random(self.seed, "properties", seed_id)
        names = list(self.config.categories)
        category = rng.choices(names, weights=[self.config.categories[n] for n in names])[0]
        return category, rng.choice(self.config.difficulties)

    def query_row(self, row: dict) -> dict:
        category, difficulty = self.draw_properties(row["seed_id"])
        return {**row, "category": category, "difficulty": difficulty}

    def output_row(self, row: dict, fields: dict, index: int) -> dict:
        category, difficulty = self.draw_properties(row["seed_id"])
        return {
            "id": stable_id(row["id"], index, fields["instruction"]),
            "seed_id": row["seed_id"],
            "concepts_id": row["id"],
            "concepts": list(row["concepts"]),
            "category": category,
            "difficulty": difficulty,
            "instruction": fields["instruction"],
        }
