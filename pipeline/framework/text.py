"""Text helpers every layer shares."""

from __future__ import annotations


def normalize_whitespace(text: str) -> str:
    """Collapse every run of whitespace to a single space and strip both ends."""
    return " ".join(text.split())
