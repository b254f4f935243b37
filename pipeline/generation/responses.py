"""The response tasks: an instruction in, a response with its own tests out (the I->R step's prompt).

:class:`ResponseTask` is the responses stage's (a fresh answer); :class:`RepairTask`, the repair
stage's, extends it with the failed attempt and the sandbox's output, and reads the answer the same way.
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


class RepairTask(ResponseTask):
    """An instruction (with, for feedback, the failed attempt and its test output) in; a response with tests out.

    The examples, the answer's header and its parsing are the responses stage's.
    """

    preamble = (
        "Each example below gives a programming instruction and then a response that solves it: a brief "
        "explanation and the complete Python solution in one fenced code block, followed by a tests section "
        "with assert statements that check it. When an earlier attempt and its test output are shown, the "
        "response fixes what made that attempt fail."
    )
    chat_reminder = (
        f"Answer as in the examples, fixing what made the attempt fail (the code, or a test that expects a wrong "
        f"value): a brief explanation, the solution in one ```python block, then a `{TESTS_HEADER}` section with a "
        f"```python block of assert statements."
    )

    def __init__(self, feedback: bool, tail_chars: int):
        self.feedback, self.tail_chars = feedback, tail_chars

    def query(self, row: dict) -> str:
        text = section("Instruction", row["instruction"])
        if self.feedback and row.get("response") is not None:
            output = (row.get("stderr") or row.get("stdout") or f"(no output; verdict {row['status']})")
            text += "\n" + section("Failed attempt", answer_with_tests(row["response"], row["tests"]))
            text += "\n" + section("Test output", output[-self.tail_chars:])
        return text
