"""The published sanitize filters of the final dataset, as small predicates.

* :func:`defined_names`: the set of function and class names a piece of code
  defines at its top level; the dedup stage keeps one sample per set (a second
  sample defining exactly the same names most likely solves the same task);
* :func:`too_many_words`: an instruction longer than a word budget;
* :func:`banned_phrase`: the first of a list of phrases (``todo``, ``fixme``,
  ``your code here``, ``notimplemented``) found anywhere in a text, in any case.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Sequence

from pydantic import Field

from pipeline.framework.config import StrictModel

DEFAULT_BANNED_PHRASES = ["todo", "fixme", "your code here", "notimplemented"]


class SanitizeSettings(StrictModel):
    """The published sanitize filters of the final dataset; each can be switched off."""

    max_instruction_words: int | None = Field(
        default=200, gt=0, description="Drop instructions longer than this many words (None: no limit)."
    )
    banned_phrases: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BANNED_PHRASES),
        description="Drop a response containing any of these anywhere in its text, in any case ([] switches it off).",
    )
    unique_names: bool = Field(
        default=True,
        description="Keep one sample per set of top-level function and class names its code defines.",
    )


def defined_names(code: str) -> frozenset[str]:
    """Names of the functions and classes ``code`` defines at its top level (empty if it does not parse)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):
        return frozenset()
    return frozenset(
        node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    )


def too_many_words(text: str, limit: int | None) -> bool:
    """Whether ``text`` has more than ``limit`` whitespace-separated words (never, when ``limit`` is None)."""
    return limit is not None and len(text.split()) > limit


def banned_phrase(text: str, phrases: Sequence[str]) -> str | None:
    """The first of ``phrases`` that occurs in ``text``, ignoring case, or None."""
    lowered = text.lower()
    return next((p for p in phrases if p.lower() in lowered), None)
