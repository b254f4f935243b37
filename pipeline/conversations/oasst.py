"""OpenAssistant message trees (the oasst1/oasst2 table layout) turned into conversations.

The release is a table with one row per message: ``message_id``,
``parent_id`` (null for the prompt that opens a tree), ``role``
(``prompter`` or ``assistant``), ``text``, ``lang``, ``rank`` (0 for the
best-rated of a message's replies; null when unranked), ``deleted`` and
``review_result``. Conversion, in order:

1. messages that are deleted, not reviewed positively (``review_result`` not
   true, or absent), or in a language outside ``languages`` are dropped, and
   so is every reply below a dropped message (``parent_dropped``): a thread
   with a hole in it is no conversation. A reply with the same role as its
   parent, or a tree whose first message is not a prompt, is malformed;
2. each tree is walked from its root: ``paths="best"`` follows, at every
   message, the best-ranked reply (lowest ``rank``; unranked replies after
   ranked ones, ties broken by ``message_id``), giving one conversation per
   tree, and its other branches are dropped as ``lower_ranked_branch``;
   ``paths="all"`` gives one conversation per root-to-leaf path (they share
   their beginnings);
3. roles map ``prompter`` -> ``user``, ``assistant`` -> ``assistant``; a
   trailing user turn (a prompt nobody answered) is cut off, and a prompt
   with no reply at all gives no conversation (``no_reply``).

A conversation's id is its root's ``message_id`` with ``paths="best"``, and
the ``message_id`` of its last answer with ``paths="all"``. Paths that become
equal once their trailing prompt is cut (two unanswered follow-ups of one
answer) are kept once.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Literal

from pipeline.conversations.result import Conversion

ROLE_NAMES = {"prompter": "user", "assistant": "assistant"}
COLUMNS = ("message_id", "parent_id", "role", "text")
"""The columns that identify a table as an OpenAssistant message table."""
AUDIT_COLUMNS = ("id", "message_id", "parent_id", "role", "lang", "rank", "text")

MALFORMED = ("root_not_prompter", "role_not_alternating")
"""Drop reasons given while linking messages into trees."""

Paths = Literal["best", "all"]


def _absent(value) -> bool:
    """True for a missing value (None, or the NaN a pandas-written Parquet file holds for a null)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _slim(row: dict) -> dict:
    """The columns kept with a dropped message for auditing."""
    return {key: row.get(key) for key in AUDIT_COLUMNS}


def rank_order(message: dict) -> tuple:
    """Sort key among siblings: ranked before unranked, lower rank first, then by message id."""
    rank = message.get("rank")
    return (_absent(rank), 0 if _absent(rank) else rank, str(message["message_id"]))


def message_problem(row: dict, seen: dict[str, dict], languages: set[str] | None) -> str | None:
    """Why one message cannot be used on its own (a drop reason), or None."""
    if any(key not in row for key in COLUMNS) or row["role"] not in ROLE_NAMES or not isinstance(row["text"], str):
        return "invalid_message"
    if row["message_id"] in seen:
        return "duplicate_message_id"
    if row.get("deleted") is True:
        return "deleted"
    if row.get("review_result") is not True:
        return "not_reviewed"
    if languages is not None and row.get("lang") not in languages:
        return "language"
    return None


def oasst_conversations(rows: Iterable[dict], languages: Iterable[str] | None = None,
                        paths: Paths = "best") -> Conversion:
    """Conversations from an OpenAssistant message table (see the module docstring for the rules)."""
    out = Conversion()
    wanted = set(languages) if languages is not None else None
    usable: dict[str, dict] = {}
    for row in rows:
        out.stats["messages_in"] += 1
        reason = message_problem(row, usable, wanted)
        if reason:
            out.drop(_slim(row), reason)
        else:
            usable[row["message_id"]] = row
    roots, replies = _link(usable, out)
    malformed = {r["message_id"] for r in out.dropped if r["drop_reason"] in MALFORMED}
    reached = _walk_all(roots, replies, out) if paths == "all" else _walk_best(roots, replies, out)
    for message in usable.values():
        if message["message_id"] not in reached and message["message_id"] not in malformed:
            out.drop(_slim(message), "parent_dropped")
    out.stats["conversations"] = len(out.conversations)
    out.stats["turns"] = sum(len(c["messages"]) for c in out.conversations)
    return out


def _link(usable: dict[str, dict], out: Conversion) -> tuple[list[dict], dict[str, list[dict]]]:
    """Roots (prompts opening a tree) and each message's replies, best-ranked first; malformed ones dropped."""
    roots: list[dict] = []
    replies: dict[str, list[dict]] = defaultdict(list)
    for message in usable.values():
        parent_id = message.get("parent_id")
        if _absent(parent_id):
            if message["role"] == "prompter":
                roots.append(message)
            else:
                out.drop(_slim(message), "root_not_prompter")
        elif parent_id in usable:
            if usable[parent_id]["role"] == message["role"]:
                out.drop(_slim(message), "role_not_alternating")
            else:
                replies[parent_id].append(message)
    for siblings in replies.values():
        siblings.sort(key=rank_order)
    return roots, replies


def _walk_best(roots: list[dict], replies: dict[str, list[dict]], out: Conversion) -> set[str]:
    """One conversation per tree along the best-ranked replies; return the ids of every message reached."""
    reached: set[str] = set()
    for root in roots:
        path = [root]
        while replies.get(path[-1]["message_id"]):
            chosen, *others = replies[path[-1]["message_id"]]
            for other in others:
                _drop_branch(other, replies, out, reached)
            path.append(chosen)
        reached.update(m["message_id"] for m in path)
        _emit(path, root["message_id"], out, set())
    return reached


def _drop_branch(top: dict, replies: dict[str, list[dict]], out: Conversion, reached: set[str]) -> None:
    """Drop a branch the best path does not take: ``top`` and every reply below it."""
    stack = [top]
    while stack:
        message = stack.pop()
        reached.add(message["message_id"])
        out.drop(_slim(message), "lower_ranked_branch")
        stack.extend(replies.get(message["message_id"], []))


def _walk_all(roots: list[dict], replies: dict[str, list[dict]], out: Conversion) -> set[str]:
    """One conversation per root-to-leaf path; return the ids of every message reached."""
    reached: set[str] = set()
    emitted: set[tuple[str, ...]] = set()
    for root in roots:
        stack = [[root]]
        while stack:
            path = stack.pop()
            reached.add(path[-1]["message_id"])
            below = replies.get(path[-1]["message_id"], [])
            if not below:
                _emit(path, None, out, emitted)
            stack.extend(path + [reply] for reply in reversed(below))
    return reached


def _emit(path: list[dict], row_id: str | None, out: Conversion, emitted: set[tuple[str, ...]]) -> None:
    """Cut a trailing prompt, then keep the path as a conversation (once) or drop a lone prompt."""
    if len(path) == 1:
        out.drop(_slim(path[0]), "no_reply")
        return
    if path[-1]["role"] == "prompter":
        out.drop(_slim(path[-1]), "trailing_user_turn")
        path = path[:-1]
    key = tuple(m["message_id"] for m in path)
    if key in emitted:
        out.stats["duplicate_paths"] += 1
        return
    emitted.add(key)
    messages = [{"role": ROLE_NAMES[m["role"]], "content": m["text"]} for m in path]
    out.keep(row_id or path[-1]["message_id"], messages)
