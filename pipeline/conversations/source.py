"""The input adapter: any table of conversations, OpenAssistant messages or instructions, read as ``messages`` rows.

:class:`ConversationSource` wraps another input source (an upstream store, a
local Parquet/JSONL file or folder, a Hub dataset) and recognises its layout
from its columns, or takes the layout the config names:

* ``messages``: rows that already hold a conversation pass through unchanged;
* ``oasst``: OpenAssistant message tables (:mod:`pipeline.conversations.oasst`);
* ``dolly``: instruction tables (:mod:`pipeline.conversations.instructions`).

Trees need the whole table at once, so a converted source reads its input
once, converts it in memory and serves the conversations from there. What the
conversion kept and dropped (by reason) is returned by :meth:`report` for the
stage's manifest, and :meth:`save_dropped` keeps the dropped rows for auditing.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Iterator, Literal

import pyarrow.parquet as pq
from pydantic import Field

from pipeline.conversations import instructions, oasst
from pipeline.conversations.result import Conversion
from pipeline.framework.config import StrictModel
from pipeline.framework.errors import InputError
from pipeline.framework.inputs import InputSource
from pipeline.framework.store import atomic_write_bytes, rows_to_table

log = logging.getLogger("pipeline.conversations")

Layout = Literal["auto", "messages", "oasst", "dolly"]


class ConversationsConfig(StrictModel):
    """Where conversations come from and how a table of another layout becomes conversations."""

    dataset: str | None = Field(
        default=None,
        description="A Parquet/JSONL file or folder, or a Hub dataset id (owner/name[@revision][:split]), read "
                    "instead of the upstream stage's output; null: the upstream output, or --input when given.")
    format: Layout = Field(
        default="auto",
        description="Layout of the table: 'messages' (a messages column), 'oasst' (OpenAssistant message table: "
                    "message_id, parent_id, role, text, lang, rank, deleted, review_result), 'dolly' (instruction, "
                    "context, response); 'auto' recognises it from the columns.")
    languages: list[str] | None = Field(
        default=None, description="OpenAssistant: keep messages in these languages only (lang codes, e.g. [en]); "
                                  "null keeps every language.")
    paths: Literal["best", "all"] = Field(
        default="best", description="OpenAssistant: 'best' walks each tree along its best-ranked replies (one "
                                    "conversation per tree); 'all' gives every root-to-leaf path.")


def detect_layout(columns: list[str], where: str) -> str:
    """The layout a table's columns show; a one-line error naming the source when none fits."""
    have = set(columns)
    if "messages" in have or not have:
        return "messages"
    if set(oasst.COLUMNS) <= have:
        return "oasst"
    if set(instructions.COLUMNS) <= have:
        return "dolly"
    raise InputError(
        f"{where}: not a conversation table: expected a messages column, an OpenAssistant message table "
        f"({', '.join(oasst.COLUMNS)}) or an instruction table ({', '.join(instructions.COLUMNS)}); "
        f"has: {', '.join(sorted(have - {'id'}))}")


class ConversationSource(InputSource):
    """Rows of ``{"id", "messages"}`` from a table of any supported layout."""

    def __init__(self, inner: InputSource, config: ConversationsConfig):
        self.inner = inner
        self.config = config
        self.description = inner.description
        self._layout: str | None = None
        self._conversion: Conversion | None = None

    @property
    def layout(self) -> str:
        """The table's layout: the configured one, or the one its columns show."""
        if self._layout is None:
            self._layout = self.config.format if self.config.format != "auto" else \
                detect_layout(self.inner.columns(), self.inner.description)
        return self._layout

    def columns(self) -> list[str]:
        """The inner columns for a messages table, else the converted rows' columns."""
        if self.layout == "messages":
            return self.inner.columns()
        missing = [c for c in (oasst.COLUMNS if self.layout == "oasst" else instructions.COLUMNS)
                   if c not in self.inner.columns()]
        if missing:
            raise InputError(f"{self.inner.description}: missing column(s) {', '.join(missing)} of the "
                             f"{self.layout} layout")
        return ["id", "messages"]

    def conversion(self) -> Conversion | None:
        """The converted table (computed once), or None for a messages table."""
        if self.layout == "messages":
            return None
        if self._conversion is None:
            rows = self.inner.iter_rows()
            if self.layout == "oasst":
                self._conversion = oasst.oasst_conversations(rows, self.config.languages, self.config.paths)
            else:
                self._conversion = instructions.instruction_conversations(rows)
            done = self._conversion
            log.info("%s: %s table -> %d conversations; dropped %s", self.description, self.layout,
                     len(done.conversations), done.dropped_by_reason() or "nothing")
        return self._conversion

    def iter_rows(self) -> Iterator[dict]:
        """The conversations, in a fixed order."""
        converted = self.conversion()
        if converted is None:
            yield from self.inner.iter_rows()
        else:
            yield from converted.conversations

    def digest(self) -> str:
        """The inner input's digest, unchanged.

        The conversion settings are stage config, so the stage's fingerprint
        already covers them; the layout follows from the input's columns. Kept
        equal to the upstream's output digest, a finished finetune stage stays
        done until its upstream output changes (the runner compares the two).
        """
        return self.inner.digest()

    def count(self) -> int | None:
        """Rows served, when known without reading (a messages table) or once converted."""
        converted = self.conversion()
        return self.inner.count() if converted is None else len(converted.conversations)

    def report(self) -> dict:
        """What the conversion did, for a manifest: layout, rows in, conversations out, drops by reason, counters."""
        converted = self.conversion()
        if converted is None:
            return {"format": "messages"}
        stats = dict(converted.stats)
        rows_in = stats.pop("messages_in", None) or stats.pop("rows_in", 0)
        return {"format": self.layout, "rows_in": rows_in, "conversations": len(converted.conversations),
                "dropped": converted.dropped_by_reason(), "stats": dict(sorted(stats.items())),
                "settings": {"languages": self.config.languages, "paths": self.config.paths}
                if self.layout == "oasst" else {}}

    def save_dropped(self, folder: Path) -> Path | None:
        """Write the rows the conversion dropped, with their reason, to ``folder/part-00000.parquet``."""
        converted = self.conversion()
        if converted is None or not converted.dropped:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        pq.write_table(rows_to_table(converted.dropped), buffer, compression="zstd")
        path = folder / "part-00000.parquet"
        atomic_write_bytes(path, buffer.getvalue())
        return path
