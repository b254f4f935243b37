"""Streaming helpers shared by the backends: stop strings applied to text that arrives piece by piece,
and the end-of-turn marker of a chat template.

A stop string may arrive split over several pieces, so :class:`StopScanner`
holds back the end of the text while it could still be the start of a stop
string, and releases it once it cannot. The text it lets through, joined,
equals what :func:`pipeline.llm.base.apply_stop` makes of the whole text.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

from pipeline.llm.base import apply_stop

_PROBE = "\x00answer\x00"


class StopScanner:
    """Cuts streamed text at the first stop string, releasing only text that no stop string can still claim."""

    def __init__(self, stop: Sequence[str]):
        self.stop = [s for s in stop if s]
        self.text = ""
        self.released = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Add a piece of generated text; return the new text that is safe to show (maybe empty)."""
        if self.stopped:
            return ""
        self.text += piece
        cut, hit = apply_stop(self.text, self.stop)
        if hit:
            self.stopped = True
            return self._release(len(cut))
        return self._release(len(self.text) - self._held_back())

    def finish(self) -> str:
        """The text still held back once generation has ended (nothing after a stop string)."""
        return "" if self.stopped else self._release(len(self.text))

    def _held_back(self) -> int:
        """Length of the longest end of the text that is the beginning of some stop string."""
        longest = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text)), longest, -1):
                if self.text.endswith(s[:k]):
                    longest = k
                    break
        return longest

    def _release(self, end: int) -> str:
        piece = self.text[self.released : end] if end > self.released else ""
        self.released = max(self.released, end)
        return piece


def stream_with_stops(pieces: Iterable[str], stop: Sequence[str]) -> Iterator[str]:
    """Pass streamed pieces through a :class:`StopScanner`; stops reading once a stop string appears."""
    scanner = StopScanner(stop)
    for piece in pieces:
        shown = scanner.feed(piece)
        if shown:
            yield shown
        if scanner.stopped:
            return
    rest = scanner.finish()
    if rest:
        yield rest


def turn_end_marker(tokenizer: Any) -> str | None:
    """What a tokenizer's chat template writes after an assistant's answer (``<|end|>``, ``<|im_end|>``, ...).

    Found by rendering a two-turn conversation with a probe as the answer and
    reading what follows the probe, surrounding whitespace removed; None when
    the tokenizer has no template or writes nothing after an answer.
    """
    if not getattr(tokenizer, "chat_template", None):
        return None
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
    try:
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
    except Exception:  # a template that refuses this conversation shape tells us nothing
        return None
    if not isinstance(text, str) or _PROBE not in text:
        return None
    return text.split(_PROBE, 1)[1].strip() or None
