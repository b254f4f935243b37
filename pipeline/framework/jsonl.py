"""Reading JSONL files: one JSON object per line, with one-line errors naming file, line and column.

Every reader of a JSONL file (``--input``, a judge's requests, an answers file
to score, a benchmark, HumanEval itself) goes through :func:`jsonl_records`, so
a broken line reads the same everywhere; each caller then checks the fields it
needs itself. A file whose name ends in ``.gz`` is read through gzip.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterator

from pipeline.framework.errors import InputError


def jsonl_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a UTF-8 JSONL file (gzip-compressed when named ``*.gz``).

    A leading byte-order mark is ignored. A line that is not UTF-8, not JSON or
    not a JSON object raises :class:`InputError` naming the file and line (and
    the column, for the first two).
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}: line {lineno}, column {exc.start + 1}: not UTF-8 text (byte "
                                 f"0x{raw[exc.start]:02x}); save the file as UTF-8") from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: line {lineno}, column {exc.colno}: not valid JSON: {exc.msg}") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}: line {lineno}: expected one JSON object per line, got "
                                 f"{type(obj).__name__}")
            yield lineno, obj
