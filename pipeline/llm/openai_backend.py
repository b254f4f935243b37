"""Generation through any OpenAI-compatible server (vllm serve, SGLang, TGI, llama.cpp, ...).

* Text prompts go to ``/v1/completions``, conversations to
  ``/v1/chat/completions``, one request per prompt asking for ``n`` choices.
* At most ``max_concurrency`` requests are in flight (a thread pool).
* Retries with exponential backoff (0.5 s doubling, up to 8 s, with jitter; a
  server's ``Retry-After`` is honoured) on timeouts, connection errors, 408,
  409, 429 and 5xx come from the official ``openai`` SDK, configured with
  ``max_retries`` and ``timeout_s``.
* A server that rejects ``n > 1`` with a 400, or returns fewer choices than
  asked, gets the missing completions as separate single requests (seeded
  ``seed + i`` so they differ); after one rejection the backend stops asking
  for ``n > 1``.
* Failures raise :class:`BackendError` with one line naming the URL and the
  model: connection refused, timeout, unknown model (404), authentication
  (401/403), any other HTTP status.
* The text is cut at the first stop string even if the server left it in.
* Each request carries its prompt's seed (``seeds[i]``, else ``params.seed``);
  whether it makes sampling reproducible is the server's business (vLLM
  honours it per request, so batching on the server changes nothing).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterator, Sequence

from pipeline.framework.text import normalize_whitespace
from pipeline.llm.base import Backend, BackendError, Completion, Conversation, SamplingParams, finalize, prompt_seeds
from pipeline.llm.config import LLMConfig
from pipeline.llm.streaming import stream_with_stops

_PROGRESS_MIN_REQUESTS = 16


class OpenAIBackend(Backend):
    """Client of an OpenAI-compatible HTTP server, with bounded concurrency."""

    def __init__(self, config: LLMConfig, base_url: str | None = None, max_concurrency: int | None = None) -> None:
        """Client of ``base_url`` (default: the config's) with ``max_concurrency`` requests in flight (default: the config's)."""
        try:
            import openai
        except ImportError as e:  # pragma: no cover - openai is a core dependency
            raise BackendError("the openai backend needs the 'openai' package (pip install openai)") from e
        if base_url is None and config.backend != "openai":
            raise ValueError(f"OpenAIBackend needs backend='openai' or a base_url, got {config.backend!r}")
        self.config = config
        self.base_url = (base_url or config.base_url).rstrip("/")
        self.max_concurrency = max_concurrency or config.max_concurrency
        api_key = os.environ.get(config.api_key_env) or "EMPTY"
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key,
            timeout=config.timeout_s,
            max_retries=config.max_retries,
        )
        self._n_supported = True
        self._lock = threading.Lock()

    # -- public API -------------------------------------------------------

    def generate(
        self, prompts: list[str], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """Complete each text prompt via ``/v1/completions``; ``params.n`` completions each."""
        return self._map(prompts, lambda p, n, seed: self._complete_one(p, params, n, seed), params, seeds)

    def generate_chat(
        self, conversations: list[Conversation], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """Answer each conversation via ``/v1/chat/completions``; ``params.n`` answers each."""
        return self._map(conversations, lambda c, n, seed: self._chat_one(c, params, n, seed), params, seeds)

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        """Stream one completion of a text prompt from ``/v1/completions`` (``stream: true``)."""
        return self._stream(lambda kwargs: self._client.completions.create(prompt=prompt, **kwargs),
                            lambda choice: choice.text, params)

    def stream_chat(self, conversation: Conversation, params: SamplingParams) -> Iterator[str]:
        """Stream the next answer from ``/v1/chat/completions``; the server's template ends the turn."""
        return self._stream(lambda kwargs: self._client.chat.completions.create(messages=conversation, **kwargs),
                            lambda choice: choice.delta.content, params)

    def close(self) -> None:
        """Close the HTTP client's connections."""
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.close()

    # -- internals --------------------------------------------------------

    def _map(self, items: list[Any], call: Callable[[Any, int, int | None], list[Completion]], params: SamplingParams,
             seeds: Sequence[int] | None):
        """Run one logical request per item (with its own seed) on the thread pool, in order; first failure cancels
        the rest."""
        if self._client is None:
            raise BackendError("backend is closed")
        if not items:
            return []
        per_item = [params.model_copy(update={"seed": seed}) for seed in prompt_seeds(len(items), params, seeds)]
        results: list[list[Completion] | None] = [None] * len(items)
        progress = None
        if self.config.show_progress and len(items) >= _PROGRESS_MIN_REQUESTS:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(items), desc="generate", unit="prompt")
        workers = min(self.max_concurrency, len(items))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-backend")
        try:
            futures = {pool.submit(self._with_n, call, item, per_item[i]): i for i, item in enumerate(items)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in done:
                    exc = fut.exception()
                    if exc is not None:
                        for other in pending:
                            other.cancel()
                        raise exc
                    results[futures[fut]] = fut.result()
                    if progress is not None:
                        progress.update(1)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if progress is not None:
                progress.close()
        return [r if r is not None else [] for r in results]

    def _with_n(self, call: Callable[[Any, int, int | None], list[Completion]], item: Any, params: SamplingParams):
        """Get ``params.n`` completions for one item: one request asking for n, topped up by single requests."""
        import openai

        got: list[Completion] = []
        n_rejected = False
        if params.n > 1 and self._n_supported:
            try:
                got = call(item, params.n, params.seed)
            except openai.BadRequestError:
                n_rejected = True  # maybe n > 1 itself: a single request tells
            except openai.OpenAIError as e:
                raise self._error(e) from None
        k = len(got)
        while len(got) < params.n:
            seed = None if params.seed is None else params.seed + k
            try:
                more = call(item, 1, seed)
            except openai.OpenAIError as e:
                raise self._error(e) from None
            if not more:
                raise BackendError(f"server {self.base_url} returned no choices for model {self.config.model!r}")
            if n_rejected:
                with self._lock:
                    self._n_supported = False  # the server refuses n > 1: ask one at a time from now on
                n_rejected = False
            got.extend(more)
            k += 1
        return got[: params.n]

    def _stream(self, request: Callable[[dict], Any], text_of: Callable[[Any], str | None],
                params: SamplingParams) -> Iterator[str]:
        """Send one streaming request and yield its text pieces, cut at the first stop string."""
        import openai

        if self._client is None:
            raise BackendError("backend is closed")
        try:
            chunks = request({**self._sampling_kwargs(params, 1, params.seed), "stream": True})
            with chunks:
                pieces = (text_of(chunk.choices[0]) or "" for chunk in chunks if chunk.choices)
                yield from stream_with_stops(pieces, params.stop)
        except openai.OpenAIError as e:
            raise self._error(e) from None

    def _sampling_kwargs(self, params: SamplingParams, n: int, seed: int | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.config.model,
            "n": n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if seed is not None:
            kwargs["seed"] = seed
        if params.repetition_penalty != 1.0:
            # not an OpenAI parameter: vllm serve, SGLang and TGI read it from the request body
            kwargs["extra_body"] = {"repetition_penalty": params.repetition_penalty}
        return kwargs

    def _complete_one(self, prompt: str, params: SamplingParams, n: int, seed: int | None) -> list[Completion]:
        resp = self._client.completions.create(prompt=prompt, **self._sampling_kwargs(params, n, seed))
        choices = sorted(resp.choices, key=lambda c: c.index)
        return [_to_completion(c.text or "", c.finish_reason, params) for c in choices]

    def _chat_one(self, conversation: Conversation, params: SamplingParams, n: int, seed: int | None):
        resp = self._client.chat.completions.create(messages=conversation, **self._sampling_kwargs(params, n, seed))
        choices = sorted(resp.choices, key=lambda c: c.index)
        return [_to_completion(c.message.content or "", c.finish_reason, params) for c in choices]

    def _error(self, e: Exception) -> BackendError:
        """Translate an openai SDK error into a one-line BackendError naming the URL and model."""
        import openai

        url, model = self.base_url, self.config.model
        body = getattr(e, "body", None)
        message = body.get("message") if isinstance(body, dict) else None
        detail = normalize_whitespace(str(message or getattr(e, "message", None) or e))
        if isinstance(e, openai.APITimeoutError):
            return BackendError(
                f"request to {url} (model {model!r}) timed out after {self.config.timeout_s:g}s "
                f"and {self.config.max_retries} retries"
            )
        if isinstance(e, openai.APIConnectionError):
            cause = e.__cause__ or e.__context__
            reason = normalize_whitespace(str(cause)) if cause else detail
            return BackendError(f"cannot connect to {url} (model {model!r}): {reason}")
        if isinstance(e, openai.NotFoundError):
            code = str(body.get("code") or "") if isinstance(body, dict) else ""
            if "model" in code or "model" in detail.lower():
                return BackendError(f"model {model!r} not found at {url}: {detail}")
            return BackendError(f"{url} answered 404 for model {model!r} (does base_url end in /v1?): {detail}")
        if isinstance(e, (openai.AuthenticationError, openai.PermissionDeniedError)):
            return BackendError(
                f"authentication failed at {url} (HTTP {e.status_code}, model {model!r}); "
                f"check ${self.config.api_key_env}: {detail}"
            )
        if isinstance(e, openai.APIStatusError):
            return BackendError(f"{url} answered HTTP {e.status_code} for model {model!r}: {detail}")
        return BackendError(f"request to {url} (model {model!r}) failed: {type(e).__name__}: {detail}")


def _to_completion(text: str, finish_reason: str | None, params: SamplingParams) -> Completion:
    """Map a server choice to a Completion: 'length' stays, anything else ended on its own."""
    return finalize(text, params.stop, ended_by_model=finish_reason != "length")
