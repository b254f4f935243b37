"""What a conversion produces: conversations, the input rows it dropped with their reason, and counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Conversion:
    """Conversations (``{"id", "messages"}`` rows), dropped input rows (each with ``drop_reason``), counters."""

    conversations: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)
    stats: Counter = field(default_factory=Counter)

    def keep(self, row_id: str, messages: list[dict]) -> None:
        """Add one conversation."""
        self.conversations.append({"id": row_id, "messages": messages})

    def drop(self, row: dict, reason: str) -> None:
        """Record an input row that does not reach any conversation, and why."""
        self.dropped.append({**row, "drop_reason": reason})

    def dropped_by_reason(self) -> dict[str, int]:
        """How many input rows each reason dropped, by reason name."""
        return dict(sorted(Counter(r["drop_reason"] for r in self.dropped).items()))
