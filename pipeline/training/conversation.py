"""A training conversation as the pipeline writes it: ``messages``, a list of ``{role, content}`` turns."""

from __future__ import annotations

import pyarrow as pa

from pipeline.generation.prompting import answer_with_tests

MESSAGE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)
"""The Arrow type of a ``messages`` column (and of trl's ``prompt``, ``chosen`` and ``rejected``)."""


def turn(role: str, content: str) -> dict:
    """One turn of a conversation."""
    return {"role": role, "content": content}


def assistant_answer(response: str, tests: str, with_tests: bool) -> str:
    """The assistant turn's text: the response, then (by default) its tests as sampled."""
    if not with_tests:
        return response.strip()
    return answer_with_tests(response.strip(), tests.strip())
