"""Stable row ids: derived from a row's content and its parent's id, so any row traces back to its seed."""

from __future__ import annotations

import hashlib


def stable_id(*parts: str | int | None, length: int = 16) -> str:
    """A short hex id that depends only on ``parts`` (for example a parent id and the row's text)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(b"\x1f")
        h.update(("" if part is None else str(part)).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:length]


def unit_interval(*parts: str | int | None) -> float:
    """A reproducible number in [0, 1) from ``parts``: for seeded choices that must not depend on order."""
    digest = hashlib.sha256("\x1f".join("" if p is None else str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
