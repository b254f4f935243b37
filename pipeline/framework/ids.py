"""Stable row ids, and seeded choices that depend on a key, never on the order rows come in.

Ids derive from a row's content and its parent's id, so any row traces back to its seed. Every seeded
choice of the method (which few-shot examples a row shows, a row's sampling seed, which duplicate
survives) goes through the helpers below, so a rerun, a resumed crash or another batching makes the
same choice.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable


def stable_id(*parts: str | int | None, length: int = 16) -> str:
    """A short hex id that depends only on ``parts`` (for example a parent id and the row's text)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(b"\x1f")
        h.update(("" if part is None else str(part)).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:length]


def seeded_random(*key: str | int | None) -> random.Random:
    """A random generator seeded by ``key`` (e.g. run seed, stage, row id): the same key draws the same."""
    return random.Random(int(stable_id(*key), 16))


def seed_from(*key: str | int | None) -> int:
    """A sampling seed (0 <= seed < 2**31) derived from ``key`` alone."""
    return int(stable_id(*key), 16) % 2**31


def seeded_rank(seed: int, row_id: str) -> bytes:
    """Where ``row_id`` stands in the run's seeded order (``sha256(seed:id)``; smallest first)."""
    return hashlib.sha256(f"{seed}:{row_id}".encode()).digest()


def seeded_order(rows: Iterable[dict], seed: int) -> list[dict]:
    """Rows in the run's seeded order (by :func:`seeded_rank` of their ids): independent of the input order."""
    return sorted(rows, key=lambda r: seeded_rank(seed, r["id"]))
