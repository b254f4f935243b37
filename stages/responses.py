"""responses (I->R): the base model answers each instruction n times, each answer with its own tests.

The prompt shows k bank examples (default 1, as published; an instruction, then a response: a short
explanation and the solution in one fenced Python block, then a ``### Tests``
section with a fenced block of asserts) and ends with this instruction. Each
of the n samples (default 10, temperature 0.7, 1536 tokens) is split into its
response text and its tests block. Dropped, by reason: ``truncated`` (hit the
token limit), ``empty``, ``no_tests`` (no tests section or an empty one),
``no_code`` (no fenced Python block in the response).

The program the execute stage runs is the response's Python blocks, in
order, followed by the tests.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from pipeline.framework.ids import stable_id
from pipeline.generation.responses import ResponseTask
from pipeline.generation.stage import GenerationConfig, GenerationStage


class ResponsesConfig(GenerationConfig):
    """Settings of the responses stage (the paper's: 1 bank example, 10 samples at temperature 0.7, 1536 tokens)."""

    fewshot_k: int = Field(
        default=1, ge=0,
        description="Bank examples shown before each instruction (1, as published: worked responses are long).",
    )
    n: int = Field(default=10, ge=1, description="Responses sampled per instruction.")
    temperature: float = Field(default=0.7, ge=0, description="Sampling temperature.")
    max_tokens: int = Field(default=1536, ge=1, description="Most new tokens per response.")


class ResponsesStage(GenerationStage):
    """Answer each instruction n times, with tests."""

    name = "responses"
    title = "n responses with their own tests for each instruction (I->R)"
    version = "2"  # chat prompts end with a reminder of the answer's format
    upstream = "instructions"
    Config = ResponsesConfig
    task = ResponseTask()
    input_columns = {"id": "instruction id", "seed_id": "seed id", "instruction": "the instruction"}
    output_columns = {
        "id": (pa.string(), "row id: hash of the instruction id, the sample index and the response"),
        "seed_id": (pa.string(), "the seed this row comes from"),
        "instruction_id": (pa.string(), "the instruction answered"),
        "instruction": (pa.string(), "the instruction"),
        "sample_index": (pa.int32(), "which of the n samples"),
        "response": (pa.string(), "the response: explanation and fenced Python solution"),
        "tests": (pa.string(), "the tests block (Python asserts)"),
    }

    def output_row(self, row: dict, fields: dict, index: int) -> dict:
        return {
            "id": stable_id(row["id"], index, fields["response"], fields["tests"]),
            "seed_id": row["seed_id"],
            "instruction_id": row["id"],
            "instruction": row["instruction"],
            "sample_index": index,
            "response": fields["response"],
            "tests": fields["tests"],
        }
