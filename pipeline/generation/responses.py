"""The response task: an instruction in, a response with its own tests out (the I->R step's prompt).

Shared by the responses stage (a fresh answer) and the repair stage, whose task
extends this one with the failed attempt and its test output.
"""

from __future__ import annotations

from pipeline.generation.fewshot import FewShotExample
from pipeline.generation.prompting import (
    TESTS_HEADER, ParseFailure, PromptTask, answer_with_tests, parse_answer_with_tests, section,
)


class ResponseTask(PromptTask):
    """Instruction in, response and tests out."""

    preamble = (
        "Each example below gives a programming instruction and then a response that solves it: a brief "
        "explanation and the complete Python solution in one fenced code block, followed by a tests section "
        "with assert statements that check the solution, edge cases included."
    )
    answer_header = "### Response\n"
    extra_stop = ["\n### Instruction"]  # the model starting a new example without its header
    chat_reminder = (
        f"Answer as in the examples: a brief explanation, the solution in one ```python block, then a "
        f"`{TESTS_HEADER}` section with a ```python block of assert statements."
    )

    def query(self, row: dict) -> str:
        return section("Instruction", row["instruction"])

    def example_query(self, example: FewShotExample) -> str:
        return section("Instruction", example.instruction)

    def example_answer(self, example: FewShotExample) -> str:
        return answer_with_tests(example.response, example.tests)

    def parse(self, answer: str) -> dict | ParseFailure:
        return parse_answer_with_tests(answer)
