"""One conversation with a model through any backend, streamed, in the model's own chat format.

A model with a chat template (a fine-tuned one, or any model behind an
OpenAI-compatible server) gets the whole history as a conversation each turn:
the backend renders it with the model's template and the answer ends at the
template's end-of-turn marker. A base model without a template gets the
technical-assistant transcript instead (:mod:`pipeline.chat.preamble`), and
its answer ends where it would start the next human turn.
"""

from __future__ import annotations

from typing import Iterator

from pipeline.chat.preamble import Preamble, load_preamble
from pipeline.llm.base import Backend, SamplingParams

CHAT_TEMPERATURE = 0.2
CHAT_TOP_P = 0.95
CHAT_MAX_TOKENS = 512


class ChatSession:
    """The history of one conversation and the backend that answers it."""

    def __init__(self, backend: Backend, params: SamplingParams, system: str | None = None,
                 preamble: Preamble | None = None):
        """``system`` opens every conversation of a chat model; ``preamble`` serves a model without a template."""
        self.backend = backend
        self.params = params
        self.system = system
        self.uses_template = backend.supports_chat()
        self.preamble = None if self.uses_template else (preamble or load_preamble())
        self.history: list[dict] = []

    @property
    def mode(self) -> str:
        """``chat template`` or ``technical-assistant preamble``: how turns reach the model."""
        return "chat template" if self.uses_template else "technical-assistant preamble"

    def reset(self) -> None:
        """Forget the conversation so far."""
        self.history.clear()

    def conversation(self) -> list[dict]:
        """The messages the model sees next: the system turn (if any) and the history."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.history

    def reply(self, text: str) -> Iterator[str]:
        """Add a user turn and stream the model's answer; the answer joins the history when the stream ends."""
        self.history.append({"role": "user", "content": text})
        turn = len(self.history) // 2
        params = self.params
        if params.seed is not None:
            params = params.model_copy(update={"seed": params.seed + turn})
        if self.uses_template:
            pieces = self.backend.stream_chat(self.conversation(), params)
        else:
            params = params.model_copy(update={"stop": [*params.stop, *self.preamble.stop]})
            pieces = self.backend.stream(self.preamble.prompt(self.history), params)
        answer: list[str] = []
        try:
            for piece in pieces:
                answer.append(piece)
                yield piece
        finally:
            self.history.append({"role": "assistant", "content": "".join(answer).strip()})
