"""Few-shot prompts for a base model, and the same tasks as chat messages for an instruct model.

A task says how to show a row as a *query* (the sections the model reads),
which section header opens the *answer*, how a bank example answers, and how
to parse the model's answer. From that one description come both forms:

Completion form (a base model continues the text)::

    <preamble>

    ## Example 1
    <query sections of example 1>
    <answer header><answer of example 1>

    ...

    ## Example k+1
    <query sections of the row>
    <answer header>            <- the prompt ends here; the model writes the answer

The stop string ``\\n## Example`` ends the answer where the model would start
another example. Chat form: the preamble as the system message, each example
as a user turn (its query) and an assistant turn (header + answer), then the
row's query as the last user turn; the answer is parsed the same way. A task
may phrase the chat form's system message and turns in plain words instead
(``chat_preamble``, ``chat_query``, ...): small instruct models follow a
request better than a page of sections.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from pipeline.generation.fewshot import FewShotExample

EXAMPLE_HEADER = "## Example"
FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:\n)?```", re.DOTALL)


@dataclass(frozen=True)
class ParseFailure:
    """Why an answer could not be used; the reason becomes the drop reason."""

    reason: str


PYTHON_TAGS = {"python", "py", "python3", ""}


def python_blocks(text: str) -> list[str]:
    """The bodies of the fenced code blocks in ``text`` tagged as Python (or untagged)."""
    return [body for tag, body in FENCE.findall(text) if tag.lower() in PYTHON_TAGS]


def section(name: str, body: str) -> str:
    """A named section: a ``### name`` header line and its body."""
    return f"### {name}\n{body.rstrip()}\n"


def code_section(name: str, code: str) -> str:
    """A named section holding ``code`` in a fenced Python block."""
    return section(name, f"```python\n{code.rstrip()}\n```")


TESTS_HEADER = "### Tests"


def answer_with_tests(response: str, tests: str) -> str:
    """A response followed by its tests section (a fenced block of asserts), as the responses are sampled."""
    return f"{response.rstrip()}\n\n{TESTS_HEADER}\n```python\n{tests.rstrip()}\n```"


def parse_answer_with_tests(answer: str) -> dict | ParseFailure:
    """Split an answer into ``response`` (with a fenced Python block) and ``tests``, or say what is missing."""
    response, header, tests_part = answer.partition(f"\n{TESTS_HEADER}")
    if not header:
        return ParseFailure("no_tests")
    if not python_blocks(response):
        return ParseFailure("no_code")
    blocks = python_blocks(tests_part)
    tests = "\n".join(blocks) if blocks else tests_part
    if not tests.strip():
        return ParseFailure("no_tests")
    return {"response": response.strip(), "tests": tests.strip()}


class PromptTask(ABC):
    """One step of the method as a prompt: how to ask, and how to read the answer."""

    preamble: ClassVar[str]
    answer_header: ClassVar[str]
    extra_stop: ClassVar[list[str]] = []
    """Stop strings besides the next example's header (e.g. the next section)."""
    chat_reminder: ClassVar[str] = ""
    """Chat form only: a line after the last query restating the answer's format (instruct models drift from it)."""
    chat_preamble: ClassVar[str | None] = None
    """Chat form only: the system message, when it should differ from the completion form's preamble."""

    @abstractmethod
    def query(self, row: dict) -> str:
        """The sections the model reads for this row (or bank example)."""

    @abstractmethod
    def example_query(self, example: FewShotExample) -> str:
        """The query sections of a bank example."""

    @abstractmethod
    def example_answer(self, example: FewShotExample) -> str:
        """What a bank example answers, without the header."""

    @abstractmethod
    def parse(self, answer: str) -> dict | ParseFailure:
        """Read the model's answer (without the header) into output fields, or say why it cannot be used."""

    # -- how the chat form asks (by default, as the completion form does) ---------
    def chat_query(self, row: dict) -> str:
        """The user turn asking for this row's answer in the chat form."""
        return self.query(row)

    def chat_example_query(self, example: FewShotExample) -> str:
        """The user turn of a bank example in the chat form."""
        return self.example_query(example)

    def chat_example_answer(self, example: FewShotExample) -> str:
        """The assistant turn of a bank example in the chat form: header and answer."""
        return self.answer_header + self.example_answer(example)

    # -- the two forms ---------------------------------------------------------
    def stop(self) -> list[str]:
        """Stop strings: the next example, plus any task-specific ones."""
        return [f"\n{EXAMPLE_HEADER}", *self.extra_stop]

    def completion_prompt(self, examples: list[FewShotExample], row: dict) -> str:
        """The few-shot text a base model continues."""
        parts = [self.preamble.strip(), ""]
        for i, example in enumerate(examples, 1):
            parts.append(f"{EXAMPLE_HEADER} {i}")
            parts.append(self.example_query(example).rstrip())
            parts.append(self.answer_header + self.example_answer(example).rstrip())
            parts.append("")
        parts.append(f"{EXAMPLE_HEADER} {len(examples) + 1}")
        parts.append(self.query(row).rstrip())
        return "\n".join(parts) + "\n" + self.answer_header

    def chat_messages(self, examples: list[FewShotExample], row: dict, reminder: str | None = None) -> list[dict]:
        """The same task as chat turns for an instruct model; ``reminder`` replaces the task's own reminder line."""
        messages = [{"role": "system", "content": (self.chat_preamble or self.preamble).strip()}]
        for example in examples:
            messages.append({"role": "user", "content": self.chat_example_query(example).rstrip()})
            messages.append({"role": "assistant", "content": self.chat_example_answer(example).rstrip()})
        query = self.chat_query(row).rstrip()
        reminder = self.chat_reminder if reminder is None else reminder
        if reminder:
            query = f"{query}\n\n{reminder}"
        messages.append({"role": "user", "content": query})
        return messages

    def render(self, examples: list[FewShotExample], row: dict, chat: bool = False,
               reminder: str | None = None) -> str | list[dict]:
        """The prompt for ``row`` after ``examples``: chat turns when ``chat`` (``reminder`` replacing the task's own
        line, when given), else the completion text."""
        return self.chat_messages(examples, row, reminder) if chat else self.completion_prompt(examples, row)

    def read_answer(self, text: str) -> dict | ParseFailure:
        """Parse a completion or chat reply: cut a repeated header and anything from the next example on."""
        text = text.split(f"\n{EXAMPLE_HEADER}", 1)[0]
        stripped = text.lstrip()
        header = self.answer_header.strip()
        if stripped.startswith(header):
            text = stripped[len(header):]
        if not text.strip():
            return ParseFailure("empty")
        return self.parse(text)
