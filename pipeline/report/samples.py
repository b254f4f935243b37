"""Sampled rows for the report: a reproducible pick that reads only the parts it needs, and text clipping.

The pick is drawn from the run seed and the stage name, so the same work dir
shows the same rows every time; row counts come from the Parquet footers,
so a stage of millions of rows costs a few footer reads and one or two parts.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow.parquet as pq

SHORT_COLUMNS = ("drop_reason", "name", "path", "model", "task_id", "prompt_format", "category", "difficulty",
                 "status", "passed", "finish_reason", "n_tokens", "n_train_tokens", "n_label_tokens")
"""Columns shown as one-line tags above a sample's text."""

TEXT_COLUMNS = (*SHORT_COLUMNS, "concepts", "instruction", "code", "seed", "response", "tests", "messages",
                "completion", "stdout", "stderr", "text")
"""Columns worth reading in a sample, in the order they are shown."""

REDUNDANT = {"messages": ("instruction", "response")}
"""When the key column is present, the listed ones repeat it and are not shown."""


def sample_rows(paths: list[Path], k: int, key: str) -> list[dict]:
    """Up to ``k`` rows drawn reproducibly (by ``key``) from the Parquet files ``paths``, each with ``_index``."""
    if k <= 0 or not paths:
        return []
    counts = [pq.read_metadata(p).num_rows for p in paths]
    total = sum(counts)
    if total == 0:
        return []
    picks = sorted(random.Random(key).sample(range(total), min(k, total)))
    rows: list[dict] = []
    start = 0
    for path, count in zip(paths, counts):
        local = [i - start for i in picks if start <= i < start + count]
        if local:
            names = pq.read_schema(path).names
            wanted = [c for c in ("id", *TEXT_COLUMNS) if c in names]
            table = pq.read_table(path, columns=wanted).take(local)
            rows.extend({**row, "_index": start + i} for i, row in zip(local, table.to_pylist()))
        start += count
    return rows


def display_fields(row: dict) -> list[tuple[str, str]]:
    """The (column, text) pairs of a sampled row worth reading, short ones first, empty ones left out."""
    hidden = {c for key, cols in REDUNDANT.items() if row.get(key) for c in cols}
    out = []
    for column in TEXT_COLUMNS:
        value = row.get(column)
        if column in hidden or value is None or value == "" or value == []:
            continue
        out.append((column, as_text(value)))
    return out


def as_text(value) -> str:
    """A cell as readable text: lists one item a line, chat messages as ``role: content``."""
    if isinstance(value, list):
        if all(isinstance(v, dict) and "role" in v for v in value):
            return "\n\n".join(f"[{m.get('role')}]\n{m.get('content') or ''}" for m in value)
        return "\n".join(f"- {as_text(v)}" for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def clip(text: str, max_chars: int = 800, max_lines: int = 16) -> tuple[str, int]:
    """``text`` cut to at most ``max_lines`` lines and ``max_chars`` characters; also how many characters were cut."""
    text = text.rstrip()
    lines = text.splitlines()
    shown = "\n".join(lines[:max_lines])
    if len(shown) > max_chars:
        shown = shown[:max_chars].rstrip()
    return shown, max(0, len(text) - len(shown))
