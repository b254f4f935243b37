"""Instruction tables in the Dolly layout (instruction, context, response, category) as one-turn conversations.

Each row becomes a user turn and an assistant turn. The ``context`` (a
passage the instruction refers to, empty for most categories) is folded into
the user turn after the instruction, separated by a blank line, so the model
sees the task first and the material second. Rows whose instruction or
response is empty are dropped (``empty_instruction``, ``empty_response``).
"""

from __future__ import annotations

from typing import Iterable

from pipeline.conversations.result import Conversion

COLUMNS = ("instruction", "response")
"""The columns that identify a table as an instruction table (``context`` and ``category`` are optional)."""


def user_turn(instruction: str, context: str | None) -> str:
    """The user's message: the instruction, then the context (when there is one) after a blank line."""
    instruction = instruction.strip()
    context = (context or "").strip()
    return f"{instruction}\n\n{context}" if context else instruction


def instruction_conversations(rows: Iterable[dict]) -> Conversion:
    """One two-turn conversation per row with a non-empty instruction and response; the row id is kept."""
    out = Conversion()
    for row in rows:
        out.stats["rows_in"] += 1
        instruction, response = row.get("instruction"), row.get("response")
        if not isinstance(instruction, str) or not instruction.strip():
            out.drop(row, "empty_instruction")
            continue
        if not isinstance(response, str) or not response.strip():
            out.drop(row, "empty_response")
            continue
        context = row.get("context")
        out.stats["with_context"] += bool(isinstance(context, str) and context.strip())
        out.keep(row["id"], [{"role": "user", "content": user_turn(instruction, context if isinstance(context, str) else None)},
                             {"role": "assistant", "content": response.strip()}])
    out.stats["conversations"] = len(out.conversations)
    return out
