"""The one interface every generation backend implements.

A backend turns prompts plus :class:`SamplingParams` into ``n`` completions per
prompt, each a :class:`Completion` with its text and why it ended. Backends
agree on three rules so that stages never care which one answered:

* the text is cut at the first stop string, which is not included, and the
  finish reason is then ``"stop"``;
* reaching ``max_tokens`` without a stop string or end-of-sequence token gives
  ``"length"``;
* an end-of-sequence token gives ``"stop"``.

:func:`apply_stop` implements the cut so every backend applies it the same way.

For a person waiting on an answer (``run_pipeline.py --chat``),
:meth:`Backend.stream` and :meth:`Backend.stream_chat` yield one completion
piece by piece under the same rules; a backend that cannot stream answers
whole through the default implementation.
"""

from __future__ import annotations

import abc
from typing import Iterator, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from pipeline.framework.errors import PipelineError

FinishReason = Literal["stop", "length"]

#: A chat conversation: ``[{"role": "user", "content": "..."}, ...]``.
Conversation = list[dict[str, str]]


class BackendError(PipelineError, RuntimeError):
    """A backend could not produce completions (unreachable server, unknown model, auth, missing package).

    The message is one line naming what failed (URL, model, package), meant to
    be shown to a user as it is; being a :class:`PipelineError`, the command
    line prints it without a traceback.
    """


class SamplingParams(BaseModel):
    """How to sample: ``n`` completions per prompt, each at most ``max_tokens`` tokens.

    ``temperature == 0`` means greedy decoding (then ``top_p`` is ignored).
    ``seed`` makes a call reproducible where the backend can promise it (see
    each backend's notes).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(default=1, ge=1, description="Completions per prompt.")
    temperature: float = Field(default=0.0, ge=0.0, description="0 = greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(default=256, ge=1, description="Maximum new tokens per completion.")
    stop: list[str] = Field(default_factory=list, description="Stop strings; the text is cut before the first.")
    seed: int | None = Field(
        default=None,
        description="Seed for reproducible sampling, if any: each prompt samples from its own generator seeded "
        "with it (or with its entry of the per-prompt ``seeds`` a call may pass), whatever the batching.",
    )
    repetition_penalty: float = Field(
        default=1.0, gt=0.0,
        description="Above 1 discourages tokens already in the prompt or the answer (1 = off). Small base models "
        "fall into loops without it; not part of the published recipe.",
    )

    @property
    def greedy(self) -> bool:
        """True when decoding is greedy (temperature 0)."""
        return self.temperature == 0.0


class Completion(BaseModel):
    """One generated continuation: its text (stop string excluded) and why it ended."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    finish_reason: FinishReason


def apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` before the earliest occurrence of any stop string.

    Returns the (possibly shortened) text and whether a stop string was found.
    Empty stop strings are ignored.
    """
    cut = -1
    for s in stop:
        if not s:
            continue
        i = text.find(s)
        if i != -1 and (cut == -1 or i < cut):
            cut = i
    if cut == -1:
        return text, False
    return text[:cut], True


def finalize(text: str, stop: Sequence[str], *, ended_by_model: bool) -> Completion:
    """Build a :class:`Completion` from raw generated text following the shared rules.

    ``ended_by_model`` is True when generation ended on its own (end-of-sequence
    token, or a stop string detected by the engine) rather than by hitting
    ``max_tokens``. A stop string found in ``text`` always wins: the text is cut
    there and the reason is ``"stop"``.
    """
    cut_text, hit = apply_stop(text, stop)
    if hit or ended_by_model:
        return Completion(text=cut_text, finish_reason="stop")
    return Completion(text=cut_text, finish_reason="length")


def prompt_seeds(count: int, params: SamplingParams, seeds: Sequence[int] | None) -> list[int | None]:
    """The sampling seed of each of ``count`` prompts: ``seeds`` (one per prompt) when given, else ``params.seed``."""
    if seeds is None:
        return [params.seed] * count
    if len(seeds) != count:
        raise ValueError(f"{len(seeds)} seeds for {count} prompts: give one seed per prompt")
    return [int(s) for s in seeds]


class Backend(abc.ABC):
    """A generation backend: prompts in, ``n`` completions per prompt out.

    ``seeds``, when given, holds one sampling seed per prompt (in place of
    ``params.seed``): a prompt's completions then depend on its seed, never on
    the other prompts of the call or how they were batched.

    Use as a context manager (or call :meth:`close`) to release the model or
    the HTTP client.
    """

    @abc.abstractmethod
    def generate(
        self, prompts: list[str], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """Complete each prompt as raw text (no chat template); return ``params.n`` completions per prompt, in order."""

    @abc.abstractmethod
    def generate_chat(
        self, conversations: list[Conversation], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """Answer each conversation as the assistant (the model's chat template or the server's chat endpoint)."""

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        """One completion of a raw text prompt, as pieces of text while it is generated (``params.n`` ignored).

        Joined, the pieces equal the completion's text (stop string excluded).
        This fallback yields the whole completion at once; backends that can
        stream override it.
        """
        yield self.generate([prompt], params.model_copy(update={"n": 1}))[0][0].text

    def stream_chat(self, conversation: Conversation, params: SamplingParams) -> Iterator[str]:
        """The assistant's next answer to one conversation, as pieces of text while it is generated.

        It ends at the model's end-of-turn marker. This fallback yields the
        whole answer at once; backends that can stream override it.
        """
        yield self.generate_chat([conversation], params.model_copy(update={"n": 1}))[0][0].text

    def supports_chat(self) -> bool:
        """Whether :meth:`generate_chat` can render conversations (a base model without a template cannot)."""
        return True

    def close(self) -> None:
        """Release resources (model memory, connections). Safe to call twice."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
