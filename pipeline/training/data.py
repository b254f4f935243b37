"""From conversations to training batches: tokenisation with answer-only labels, collation, packing.

:class:`ConversationEncoder` installs a chat format on a tokenizer (its Jinja
template, its special tokens, a pad token) and turns a conversation into
``input_ids`` and ``labels``: the whole rendered text is tokenised at once
(exactly as ``apply_chat_template`` tokenises it) and every token whose first
character lies outside an assistant answer is labelled -100. A special token
that a turn's own text spells out (``<|assistant|>`` typed by a user, an EOS
string inside an answer) is encoded as the plain text it is: only the
template writes control tokens, so the data cannot forge turn boundaries.

Batches are formed one of three ways (``batching`` in the stage config):

* ``pad``: rows in sampler order, padded to the longest row of the batch;
* ``group_by_length``: the same, with transformers' length-grouped sampler so
  rows of a batch have similar lengths;
* ``pack``: conversations packed first-fit-decreasing into rows of at most
  ``max_length`` tokens, each keeping its own position ids (0, 1, ...). With no
  attention mask, transformers turns position ids that restart into a
  block-diagonal causal mask, so packed conversations never see each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from pipeline.framework.errors import PipelineError
from pipeline.training.formats import (
    ChatFormat,
    check_messages,
    get_format,
    jinja_template,
    render,
    render_with_contents,
)

IGNORE = -100
Overflow = Literal["truncate", "drop"]


class TrainingOutcome:
    """What became of an input row: its ``status`` says ``kept``, ``truncated`` or ``dropped_<reason>``."""

    status: str

    @property
    def kept(self) -> bool:
        """Whether the row is trained on."""
        return not self.status.startswith("dropped_")

    @property
    def drop_reason(self) -> str | None:
        """The reason it was dropped, or None."""
        return self.status.removeprefix("dropped_") if not self.kept else None


@dataclass
class Encoded(TrainingOutcome):
    """One tokenised conversation and what became of it."""

    input_ids: list[int]
    labels: list[int]
    status: str
    """``kept``, ``truncated`` or ``dropped_<reason>``."""
    n_tokens: int
    """Tokens of the whole conversation, before any truncation."""

    @property
    def n_label_tokens(self) -> int:
        """Tokens that carry the loss."""
        return sum(1 for label in self.labels if label != IGNORE)


class ConversationEncoder:
    """A tokenizer with a chat format installed, turning conversations into labelled token ids."""

    def __init__(self, tokenizer, format_name: str = "instruction", system_prompt: str | None = None,
                 use_default_system: bool = True):
        """Install the format on ``tokenizer`` (in place): special tokens, pad token, chat template.

        ``system_prompt`` replaces the format's default preamble;
        ``use_default_system=False`` drops it (only system turns in the data
        are then rendered).
        """
        if not getattr(tokenizer, "is_fast", False):
            raise PipelineError("finetune needs a fast tokenizer (offsets are used to find the answers' tokens)")
        base = get_format(format_name)
        self.added_tokens = 0
        if base.special_tokens:
            missing = [t for t in base.special_tokens if t not in tokenizer.get_vocab()]
            self.added_tokens = tokenizer.add_tokens(list(base.special_tokens), special_tokens=True)
            if missing and not self.added_tokens:
                raise PipelineError(f"could not add the tokens {missing} to the tokenizer")
        if tokenizer.eos_token is None:
            raise PipelineError("the tokenizer has no end-of-sequence token; the chat formats need one")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        system = (system_prompt if system_prompt is not None else base.default_system) if use_default_system else None
        self.format: ChatFormat = base.with_tokens(tokenizer.eos_token, system)
        self.bos = self._bos(tokenizer, base.bos_first)
        tokenizer.chat_template = jinja_template(self.format, self.bos)
        self.tokenizer = tokenizer
        self.control_ids = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
        self.control_ids |= {tokenizer.convert_tokens_to_ids(t) for t in base.special_tokens}
        self._newline = tokenizer("\n", add_special_tokens=False, split_special_tokens=True)["input_ids"]

    @staticmethod
    def _bos(tokenizer, always: bool = False) -> str:
        """The beginning-of-sequence token when the format always starts with one (the end-of-sequence token
        stands in for a tokenizer without one, as in StarCoder2's) or the tokenizer itself would add one to
        plain text; else ''."""
        if always:
            return tokenizer.bos_token or tokenizer.eos_token
        bos_id = tokenizer.bos_token_id
        if bos_id is None:
            return ""
        ids = tokenizer("x", add_special_tokens=True)["input_ids"]
        return tokenizer.bos_token if ids and ids[0] == bos_id else ""

    @property
    def stop_token_ids(self) -> list[int]:
        """Token ids that end an answer (generation should stop on any of them)."""
        ids = [self.tokenizer.convert_tokens_to_ids(t) for t in self.format.stop_markers]
        return sorted({i for i in ids if i is not None} | {self.tokenizer.eos_token_id})

    def text(self, messages: list[dict]) -> str:
        """The training text of a conversation."""
        return render(self.format, messages, self.bos)[0]

    def encode(self, messages: list[dict], max_length: int, overflow: Overflow = "truncate") -> Encoded:
        """Token ids and labels (-100 outside assistant answers), truncated or dropped past ``max_length``."""
        problem = check_messages(messages)
        if problem:
            return Encoded([], [], f"dropped_{problem}", 0)
        text, spans, contents = render_with_contents(self.format, messages, self.bos)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = []
        labels: list[int] = []
        for tok, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
            pieces = [tok]
            if tok in self.control_ids and _inside(start, contents):
                pieces = self._as_text(text[start:end])  # typed in a turn, not written by the template
            ids += pieces
            labels += pieces if _inside(start, spans) else [IGNORE] * len(pieces)
        n = len(ids)
        status = "kept"
        if n > max_length:
            if overflow == "drop":
                return Encoded([], [], "dropped_too_long", n)
            ids, labels, status = ids[:max_length], labels[:max_length], "truncated"
            if all(label == IGNORE for label in labels):
                return Encoded([], [], "dropped_answer_truncated_away", n)
        return Encoded(ids, labels, status, n)


    def _as_text(self, token: str) -> list[int]:
        """The ids of a special token's string read as plain text (after a newline, so no word-start marker is
        added by SentencePiece-style tokenizers, which is then removed)."""
        plain = self.tokenizer("\n" + token, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        if plain[: len(self._newline)] == self._newline:
            return plain[len(self._newline):]
        return self.tokenizer(token, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def _inside(position: int, spans: list[tuple[int, int]]) -> bool:
    """Whether a character position lies in one of the (few) spans."""
    return any(start <= position < end for start, end in spans)


class ConversationDataset(torch.utils.data.Dataset):
    """Encoded conversations (or packed rows) as a map-style dataset of dicts of id lists."""

    def __init__(self, rows: list[dict]):
        """``rows``: dicts with ``input_ids`` and ``labels`` (and ``position_ids`` when packed)."""
        self.rows = rows

    def __len__(self) -> int:
        """Number of rows."""
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        """One row."""
        return self.rows[index]


def pack(examples: list[Encoded], max_length: int) -> list[dict]:
    """Pack conversations into rows of at most ``max_length`` tokens, first-fit decreasing.

    Each row concatenates whole conversations and carries ``position_ids`` that
    restart at 0 for each. The order is deterministic (longest first, ties by
    input order); the training sampler shuffles rows anyway.
    """
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i].input_ids), i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        size = len(examples[i].input_ids)
        slot = next((b for b, free in enumerate(room) if free >= size), None)
        if slot is None:
            bins.append([i])
            room.append(max_length - size)
        else:
            bins[slot].append(i)
            room[slot] -= size
    rows = []
    for members in bins:
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for i in members:
            ids += examples[i].input_ids
            labels += examples[i].labels
            positions += list(range(len(examples[i].input_ids)))
        rows.append({"input_ids": ids, "labels": labels, "position_ids": positions})
    return rows


def plain_rows(examples: list[Encoded]) -> list[dict]:
    """One training row per kept conversation."""
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]


class PaddingCollator:
    """Pads a batch to its longest row: pad id for inputs, -100 for labels.

    Unpacked rows get an attention mask. Packed rows (with ``position_ids``)
    get none: their padding continues as one more short sequence with its own
    positions, which the packed-sequence mask keeps apart, and whose labels
    are -100.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        """``pad_to_multiple_of`` rounds the padded length up (helps tensor cores on GPUs)."""
        self.pad_token_id = pad_token_id
        self.multiple = pad_to_multiple_of

    def width(self, rows: list[dict]) -> int:
        """The padded length of a batch of ``rows``."""
        width = max(len(r["input_ids"]) for r in rows)
        if self.multiple:
            width = -(-width // self.multiple) * self.multiple
        return width

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Stack ``rows`` into padded tensors."""
        width = self.width(rows)
        packed = "position_ids" in rows[0]
        batch: dict[str, list] = {"input_ids": [], "labels": []}
        if packed:
            batch["position_ids"] = []
        else:
            batch["attention_mask"] = []
        for row in rows:
            n = len(row["input_ids"])
            gap = width - n
            batch["input_ids"].append(list(row["input_ids"]) + [self.pad_token_id] * gap)
            batch["labels"].append(list(row["labels"]) + [IGNORE] * gap)
            if packed:
                batch["position_ids"].append(list(row["position_ids"]) + list(range(gap)))
            else:
                batch["attention_mask"].append([1] * n + [0] * gap)
        return {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}


def padding_share(batches: list[list[dict]], collator: PaddingCollator) -> float:
    """Share of the token slots ``collator`` would fill with padding over these batches of rows."""
    total = padded = 0
    for rows in batches:
        width = collator.width(rows)
        total += width * len(rows)
        padded += sum(width - len(r["input_ids"]) for r in rows)
    return padded / total if total else 0.0


def load_encoder(model_dir: str, chat_format: str, system_prompt: str | None = None,
                 use_default_system: bool = True) -> ConversationEncoder:
    """The tokenizer in ``model_dir`` with the chat format installed; a tokenizer that cannot load is one line."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"finetune: cannot load the tokenizer of {model_dir!r}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return ConversationEncoder(tokenizer, chat_format, system_prompt, use_default_system)
