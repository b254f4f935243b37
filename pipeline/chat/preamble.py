"""The technical-assistant preamble: a system text and a few worked dialogues for base models.

A base model has no chat template, but it continues text. Shown a description
of an assistant and a few dialogues written as a transcript, it goes on in
the same shape, so a conversation appended after them gets an answer in
turns. The transcript layout::

    <system text>
    -----
    Human: <question>

    Assistant: <answer>
    ...
    -----
    Human: <the user's message>

    Assistant:                <- the model writes from here

and the stop strings end the answer where the model would start the next
human turn or a new dialogue. The same material is also offered as chat
messages (system turn, then the dialogues as user/assistant turns) for
backends that take conversations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.framework.errors import ConfigError
from pipeline.training.formats import check_messages

DEFAULT_PREAMBLE = Path(__file__).resolve().parent.parent.parent / "configs" / "tech-assistant.yaml"
SEPARATOR = "-----"
SPEAKERS = {"user": "Human", "assistant": "Assistant"}


@dataclass(frozen=True)
class Preamble:
    """A system text and worked dialogues, each a list of alternating user/assistant turns."""

    system: str
    dialogues: tuple[tuple[dict, ...], ...]

    @property
    def stop(self) -> list[str]:
        """Stop strings that end an answer at the next human turn or dialogue."""
        return [f"\n{SPEAKERS['user']}:", f"\n{SEPARATOR}"]

    def prompt(self, history: list[dict]) -> str:
        """The transcript of the worked dialogues and ``history`` (ending with a user turn), ready to continue."""
        blocks = [self.system.strip()]
        for dialogue in (*self.dialogues, tuple(history)):
            blocks.append(SEPARATOR)
            blocks.append("\n\n".join(f"{SPEAKERS[m['role']]}: {m['content'].strip()}" for m in dialogue))
        return "\n".join(blocks) + f"\n\n{SPEAKERS['assistant']}:"

    def messages(self, history: list[dict] | None = None) -> list[dict]:
        """The same material as chat messages: the system turn, the dialogues, then ``history``."""
        turns = [{"role": "system", "content": self.system.strip()}]
        for dialogue in self.dialogues:
            turns.extend(dict(m) for m in dialogue)
        return turns + list(history or [])


def load_preamble(path: Path | str = DEFAULT_PREAMBLE) -> Preamble:
    """Read a preamble file (``system`` text, ``dialogues`` list); a bad file is a one-line error naming it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the preamble ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("system"), str) or \
            not isinstance(data.get("dialogues"), list):
        raise ConfigError(f"{path}: expected a 'system' text and a 'dialogues' list")
    dialogues = []
    for i, dialogue in enumerate(data["dialogues"]):
        roles = [m.get("role") for m in dialogue] if isinstance(dialogue, list) and \
            all(isinstance(m, dict) for m in dialogue) else []
        if check_messages(dialogue) or roles != ["user", "assistant"] * (len(roles) // 2) or not roles:
            raise ConfigError(f"{path}: dialogues[{i}]: expected alternating user/assistant turns, "
                              "starting with the user and ending with the assistant")
        dialogues.append(tuple({"role": m["role"], "content": m["content"]} for m in dialogue))
    return Preamble(data["system"], tuple(dialogues))
