"""Chat formats: how a conversation becomes training text, and which characters carry the loss.

A format is a small table: for each role, a header written before the turn's
content and an end marker written after it, plus a separator between turns.
From that one table come both

* the Jinja chat template stored on the tokenizer, so that
  ``tokenizer.apply_chat_template(messages)`` gives the very text the model
  was trained on, and
* :func:`render`, the same text built in Python together with the character
  spans of every assistant answer (its content and its end marker): the only
  characters whose tokens keep their labels.

Three formats ship:

``instruction`` (default)
    The plain instruction/response layout of the paper, in our own words: an
    optional preamble (the system turn, or a default one), then
    ``### Instruction`` and ``### Response`` headed blocks separated by a blank
    line, each answer closed by the tokenizer's end-of-sequence token.

``starcoder2-instruct``
    The prompt format StarCoder2-15B-Instruct was released with (its model
    card): the beginning-of-sequence token, the model's fixed system line, then
    ``### Instruction`` and ``### Response`` headed blocks separated by a blank
    line, each answer closed by the end-of-sequence token. The paper recipe
    trains with it, so the fine-tuned model is prompted exactly like the
    released one.

``chatml``
    Role tokens ``<|system|>``, ``<|user|>``, ``<|assistant|>`` and an
    ``<|end|>`` marker closing every turn, added to the tokenizer as special
    tokens (the embeddings are resized when they are new).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pipeline.framework.errors import InputError

ROLES = ("system", "user", "assistant")
EOS = "\x00eos\x00"
"""Placeholder in a format's table for the tokenizer's end-of-sequence token."""

DEFAULT_INSTRUCTION_PREAMBLE = (
    "You are a programming assistant. Each instruction below describes a coding task; "
    "answer it with a correct, self-contained solution and tests that show it works."
)
STARCODER2_INSTRUCT_SYSTEM = (
    "You are an exceptionally intelligent coding assistant that consistently delivers accurate and reliable "
    "responses to user instructions."
)
"""The system line of the released StarCoder2-15B-Instruct prompt format (an interface fact of that model)."""
CHATML_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")


@dataclass(frozen=True)
class ChatFormat:
    """One conversation layout: per-role headers and end markers, and the separator between turns."""

    name: str
    headers: dict[str, str]
    ends: dict[str, str]
    separator: str
    default_system: str | None = None
    special_tokens: tuple[str, ...] = ()
    stop_markers: tuple[str, ...] = field(default=(EOS,))
    bos_first: bool = False
    """Every text starts with the tokenizer's beginning-of-sequence token, whether or not it adds one itself."""

    def with_tokens(self, eos_token: str, system_prompt: str | None) -> "ChatFormat":
        """This format with the end-of-sequence placeholder filled in and the default system prompt set."""
        fill = {role: text.replace(EOS, eos_token) for role, text in self.ends.items()}
        stops = tuple(s.replace(EOS, eos_token) for s in self.stop_markers)
        return ChatFormat(self.name, dict(self.headers), fill, self.separator, system_prompt, self.special_tokens,
                          stops, self.bos_first)


INSTRUCTION = ChatFormat(
    name="instruction",
    headers={"system": "", "user": "### Instruction\n", "assistant": "### Response\n"},
    ends={"system": "", "user": "", "assistant": EOS},
    separator="\n\n",
    default_system=DEFAULT_INSTRUCTION_PREAMBLE,
)

STARCODER2_INSTRUCT = ChatFormat(
    name="starcoder2-instruct",
    headers=dict(INSTRUCTION.headers),
    ends=dict(INSTRUCTION.ends),
    separator=INSTRUCTION.separator,
    default_system=STARCODER2_INSTRUCT_SYSTEM,
    bos_first=True,
)

CHATML = ChatFormat(
    name="chatml",
    headers={"system": "<|system|>\n", "user": "<|user|>\n", "assistant": "<|assistant|>\n"},
    ends={"system": "<|end|>", "user": "<|end|>", "assistant": "<|end|>"},
    separator="\n",
    default_system=None,
    special_tokens=CHATML_TOKENS,
    stop_markers=("<|end|>",),
)

FORMATS = {f.name: f for f in (INSTRUCTION, STARCODER2_INSTRUCT, CHATML)}


def get_format(name: str) -> ChatFormat:
    """The format called ``name``."""
    try:
        return FORMATS[name]
    except KeyError:
        raise InputError(f"unknown chat format {name!r}; formats are: {', '.join(FORMATS)}") from None


def check_messages(messages) -> str | None:
    """Why ``messages`` cannot be trained on (a drop reason), or None when it can."""
    if not isinstance(messages, (list, tuple)) or not messages:
        return "invalid_messages"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            return "invalid_messages"
        if message.get("role") not in ROLES or (message["role"] == "system" and i > 0):
            return "invalid_messages"
    if not any(m["role"] == "assistant" for m in messages):
        return "no_assistant_turn"
    return None


def render(fmt: ChatFormat, messages: list[dict], bos: str = "", add_generation_prompt: bool = False
           ) -> tuple[str, list[tuple[int, int]]]:
    """The conversation as text, and the ``(start, end)`` character spans of its assistant answers.

    Each span covers an assistant turn's content and its end marker, not its
    header. The text equals what the format's Jinja template renders.
    """
    text, answers, _ = render_with_contents(fmt, messages, bos, add_generation_prompt)
    return text, answers


def render_with_contents(fmt: ChatFormat, messages: list[dict], bos: str = "", add_generation_prompt: bool = False
                         ) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]]:
    """:func:`render`'s text and answer spans, plus the spans of every turn's content (text a user typed).

    Only the characters outside the content spans were written by the template;
    the encoder turns special-token strings into control tokens there alone.
    """
    pieces: list[str] = [bos]
    spans: list[tuple[int, int]] = []
    contents: list[tuple[int, int]] = []
    position = len(bos)

    def emit(text: str) -> None:
        nonlocal position
        pieces.append(text)
        position += len(text)

    turns = list(messages)
    if fmt.default_system and (not turns or turns[0]["role"] != "system"):
        turns.insert(0, {"role": "system", "content": fmt.default_system})
    for i, message in enumerate(turns):
        role = message["role"]
        if i:
            emit(fmt.separator)
        emit(fmt.headers[role])
        start = position
        emit(message["content"])
        contents.append((start, position))
        emit(fmt.ends[role])
        if role == "assistant":
            spans.append((start, position))
    if add_generation_prompt:
        if turns:
            emit(fmt.separator)
        emit(fmt.headers["assistant"])
    return "".join(pieces), spans, contents


def _literal(text: str) -> str:
    """A Jinja string literal for ``text``."""
    return json.dumps(text, ensure_ascii=False)


def jinja_template(fmt: ChatFormat, bos: str = "") -> str:
    """The Jinja chat template that renders exactly what :func:`render` does."""
    lines = ["{%- set ns = namespace(first=true) -%}"]
    if bos:
        lines.append("{{- " + _literal(bos) + " -}}")
    if fmt.default_system:
        lines += [
            "{%- if messages | length == 0 or messages[0]['role'] != 'system' -%}",
            "{{- " + _literal(fmt.headers["system"] + fmt.default_system + fmt.ends["system"]) + " -}}",
            "{%- set ns.first = false -%}",
            "{%- endif -%}",
        ]
    lines += [
        "{%- for message in messages -%}",
        "{%- if not ns.first -%}{{- " + _literal(fmt.separator) + " -}}{%- endif -%}",
        "{%- set ns.first = false -%}",
    ]
    for i, role in enumerate(ROLES):
        keyword = "if" if i == 0 else "elif"
        lines.append("{%- " + keyword + " message['role'] == " + _literal(role) + " -%}")
        lines.append("{{- " + _literal(fmt.headers[role]) + " + message['content'] + "
                     + _literal(fmt.ends[role]) + " -}}")
    lines += [
        "{%- else -%}{{- raise_exception('unsupported role: ' + message['role']) -}}",
        "{%- endif -%}",
        "{%- endfor -%}",
        "{%- if add_generation_prompt -%}",
        "{%- if not ns.first -%}{{- " + _literal(fmt.separator) + " -}}{%- endif -%}",
        "{{- " + _literal(fmt.headers["assistant"]) + " -}}",
        "{%- endif -%}",
    ]
    return "\n".join(lines)
