"""Conversation sources: public dialogue datasets turned into ``messages`` rows for fine-tuning.

* :mod:`.oasst`: OpenAssistant message tables (oasst1/oasst2 layout), one
  row per message of a tree, walked into conversations;
* :mod:`.instructions`: Dolly-style instruction tables, one-turn conversations;
* :mod:`.source`: the input adapter that recognises a table's layout, converts
  it, and keeps what was kept and why the rest was dropped.

Every converter returns a :class:`.result.Conversion`; none of them knows
where its rows came from (a local file, a Hub dataset, a stage's store).
"""

from pipeline.conversations.result import Conversion
from pipeline.conversations.source import ConversationSource, ConversationsConfig

__all__ = ["Conversion", "ConversationSource", "ConversationsConfig"]
