"""Local batched generation with Hugging Face transformers (the CPU path for tests and the demo).

* Loads a model directory, a Hub id (only where the Hub is reachable), a
  ``.gguf`` file (converted once to a safetensors cache, see
  :mod:`pipeline.llm.models`) or ``gemma3-270m-gguf``.
* Prompts are sorted by length and cut into batches of at most
  ``batch_size`` sequences (``n`` copies of a prompt count as ``n``), left
  padded with an attention mask.
* ``temperature == 0`` is greedy (one sequence per prompt, copied ``n`` times);
  otherwise plain temperature + top-p sampling, no top-k, as vLLM and OpenAI
  servers do by default.
* Stop strings stop a row early through a ``StoppingCriteria`` that decodes
  the last few generated tokens of each row at each step and looks for a
  stop string there: only generated text counts, never the prompt, as in vLLM
  (transformers' own ``stop_strings`` also matches strings that straddle the
  prompt's end, and rebuilds a vocabulary table per call: ~3 s per batch with
  Gemma's 262k tokens). The text is then cut before the first stop string
  post hoc.
* Reproducibility: every sequence (a prompt's sample ``j``) samples from its
  own ``torch.Generator``, seeded from the prompt's seed (``seeds[i]``, else
  ``params.seed``) and ``j``; the global RNG is untouched. Transformers'
  greedy loop does the decoding, and a logits processor
  (:class:`_SeededSampler`) applies temperature and top-p and draws each row's
  token with that row's generator, leaving only it selectable. A prompt's
  completions therefore do not depend on the other prompts of the batch, on
  ``batch_size`` or on their order (padding changes the arithmetic by float
  rounding only, which can flip a draw only when it lands within rounding of
  a boundary). Without any seed, rows are seeded from the global RNG.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Iterator, Sequence

from transformers import LogitsProcessor, StoppingCriteria

from pipeline.framework.text import normalize_whitespace
from pipeline.llm.base import Backend, BackendError, Completion, Conversation, SamplingParams, finalize, prompt_seeds
from pipeline.llm.config import LLMConfig
from pipeline.llm.models import ensure_gguf_cached, is_gguf, resolve_model
from pipeline.llm.streaming import stream_with_stops, turn_end_marker

log = logging.getLogger(__name__)

_PROGRESS_MIN_BATCHES = 4


class TransformersBackend(Backend):
    """Generation with a local transformers causal LM, batched, on CPU or GPU."""

    def __init__(self, config: LLMConfig) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if config.backend != "transformers":
            raise ValueError(f"TransformersBackend needs backend='transformers', got {config.backend!r}")
        self.config = config
        self.device = _pick_device(config.device)
        source = resolve_model(config.model, config.resolved_cache_dir())
        if is_gguf(source):
            source = str(ensure_gguf_cached(source, config.resolved_cache_dir(), config.dtype))
        self.source = source
        dtype: Any = "auto"
        if config.dtype != "auto":
            dtype = getattr(torch, config.dtype)
        elif self.device.type == "cpu":
            dtype = torch.float32
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(config.tokenizer or source)
            self.model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        except OSError as e:
            raise BackendError(f"cannot load model {config.model!r} from {source!r}: {normalize_whitespace(str(e))}") from e
        self.model.to(self.device)
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._eos_ids = _eos_ids(self.model, self.tokenizer)
        self._pad_id = self.tokenizer.pad_token_id

    # -- public API -------------------------------------------------------

    def generate(
        self, prompts: list[str], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """Complete raw text prompts; ``params.n`` completions each, in prompt order."""
        return self._run(prompts, params, prompt_seeds(len(prompts), params, seeds), add_special_tokens=True)

    def generate_chat(
        self, conversations: list[Conversation], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """Render each conversation with the tokenizer's chat template (generation prompt added) and complete it."""
        prompts = [self._chat_prompt(conv) for conv in conversations]
        # The template already holds any BOS token: don't add another.
        return self._run(prompts, params, prompt_seeds(len(prompts), params, seeds), add_special_tokens=False)

    def supports_chat(self) -> bool:
        """Whether the tokenizer has a chat template."""
        return bool(self.tokenizer.chat_template)

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        """Stream one completion of a raw text prompt (TextIteratorStreamer, generation in a thread)."""
        return self._stream(prompt, params, add_special_tokens=True)

    def stream_chat(self, conversation: Conversation, params: SamplingParams) -> Iterator[str]:
        """Stream the next answer, ending at the template's end-of-turn marker (or end of sequence)."""
        prompt = self._chat_prompt(conversation)
        marker = turn_end_marker(self.tokenizer)
        ends: set[int] = set()
        stops: list[str] = []
        if marker:
            ids = self.tokenizer.encode(marker, add_special_tokens=False)
            if len(ids) == 1:
                ends.add(ids[0])
            else:
                stops.append(marker)
        return self._stream(prompt, params, add_special_tokens=False, extra_eos=sorted(ends), extra_stop=stops)

    def close(self) -> None:
        """Drop the model and free accelerator memory."""
        if getattr(self, "model", None) is None:
            return
        self.model = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover - best effort
            pass

    # -- internals --------------------------------------------------------

    def _chat_prompt(self, conversation: Conversation) -> str:
        """A conversation rendered by the chat template, generation prompt added."""
        if not self.tokenizer.chat_template:
            raise BackendError(
                f"model {self.config.model!r} has no chat template (a base model?): use generate() with text prompts"
            )
        return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def _decoding(self, params: SamplingParams, row_seeds: list[int | None], eos_ids: set[int]):
        """transformers' GenerationConfig and logits processors for these parameters, one seed per generated row.

        Sampling, when asked, is :class:`_SeededSampler`'s (one generator per row), so greedy search then
        takes its draw; a row's samples do not depend on the other rows of its batch.
        """
        from transformers import GenerationConfig, LogitsProcessorList

        gen = GenerationConfig(
            max_new_tokens=params.max_tokens,
            do_sample=False,
            eos_token_id=sorted(eos_ids) or None,
            pad_token_id=self._pad_id,
        )
        if params.repetition_penalty != 1.0:
            gen.repetition_penalty = params.repetition_penalty
        processors = LogitsProcessorList()
        if not params.greedy:
            processors.append(_SeededSampler(params.temperature, params.top_p, row_seeds, self.device))
        return gen, processors

    def _stream(self, prompt: str, params: SamplingParams, *, add_special_tokens: bool,
                extra_eos: Sequence[int] = (), extra_stop: Sequence[str] = ()) -> Iterator[str]:
        """Generate in a thread and yield decoded text as it comes; closing the iterator stops generation."""
        import threading

        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        if self.model is None:
            raise BackendError("backend is closed")
        stop = [*params.stop, *extra_stop]
        enc = self.tokenizer([prompt], return_tensors="pt", add_special_tokens=add_special_tokens)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        gen, processors = self._decoding(params, [_row_seed(params.seed, 0)], self._eos_ids | set(extra_eos))
        cancel = threading.Event()
        criteria = StoppingCriteriaList([_Cancelled(cancel)])
        if any(stop):
            criteria.append(_StopOnGeneratedText(self.tokenizer, stop, enc["input_ids"].shape[1]))
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**enc, generation_config=gen, stopping_criteria=criteria,
                                        logits_processor=processors, streamer=streamer)
            except BaseException as e:  # handed to the reading thread
                failure.append(e)
                streamer.end()

        thread = threading.Thread(target=work, name="transformers-stream", daemon=True)
        thread.start()
        try:
            yield from stream_with_stops(streamer, stop)
        finally:
            cancel.set()
            thread.join()
        if failure:
            raise BackendError(f"generation failed: {normalize_whitespace(str(failure[0]))}") from failure[0]

    def _run(self, prompts: list[str], params: SamplingParams, seeds: list[int | None], *,
             add_special_tokens: bool) -> list[list[Completion]]:
        if self.model is None:
            raise BackendError("backend is closed")
        if not prompts:
            return []
        seqs_per_prompt = 1 if params.greedy else params.n
        per_batch = max(1, self.config.batch_size // seqs_per_prompt)
        lengths = [len(ids) for ids in self.tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        batches = [order[i : i + per_batch] for i in range(0, len(order), per_batch)]

        results: list[list[Completion]] = [[] for _ in prompts]
        progress = None
        if self.config.show_progress and len(batches) >= _PROGRESS_MIN_BATCHES:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(prompts), desc="generate", unit="prompt")
        try:
            for batch in batches:
                outs = self._generate_batch([prompts[i] for i in batch], params, [seeds[i] for i in batch],
                                            add_special_tokens)
                for i, completions in zip(batch, outs):
                    results[i] = completions
                if progress is not None:
                    progress.update(len(batch))
        finally:
            if progress is not None:
                progress.close()
        return results

    def _generate_batch(
        self, prompts: list[str], params: SamplingParams, seeds: list[int | None], add_special_tokens: bool
    ) -> list[list[Completion]]:
        import torch
        from transformers import StoppingCriteriaList

        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
        per_prompt = 1 if params.greedy else params.n
        # one row per (prompt, sample): sample j of prompt i is row i * per_prompt + j
        enc = {k: v.repeat_interleave(per_prompt, dim=0).to(self.device) for k, v in enc.items()}
        prompt_len = enc["input_ids"].shape[1]
        row_seeds = [_row_seed(seed, j) for seed in seeds for j in range(per_prompt)]
        gen, processors = self._decoding(params, row_seeds, self._eos_ids)
        criteria = StoppingCriteriaList()
        if any(params.stop):
            criteria.append(_StopOnGeneratedText(self.tokenizer, params.stop, prompt_len))
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=gen, stopping_criteria=criteria,
                                      logits_processor=processors)
        new_tokens = out[:, prompt_len:].tolist()
        prompt_ids = [
            [t for t, m in zip(ids, mask) if m]
            for ids, mask in zip(enc["input_ids"][::per_prompt].tolist(), enc["attention_mask"][::per_prompt].tolist())
        ]
        results: list[list[Completion]] = []
        for p, ids in enumerate(prompt_ids):
            rows = new_tokens[p * per_prompt : (p + 1) * per_prompt]
            completions = [self._completion(ids, row, params) for row in rows]
            if per_prompt == 1 and params.n > 1:
                completions = completions * params.n
            results.append(completions)
        return results

    def _completion(self, prompt_ids: list[int], row: list[int], params: SamplingParams) -> Completion:
        """Turn one row of generated ids into a Completion (EOS / stop string / length)."""
        ended = False
        for k, t in enumerate(row):
            if t in self._eos_ids:
                row, ended = row[:k], True
                break
        else:
            real = len(row)
            while real and row[real - 1] == self._pad_id:
                real -= 1
            # Rows stopped early (stop string) are padded to the batch's length.
            ended = real < params.max_tokens
            row = row[:real]
        return finalize(self._decode_continuation(prompt_ids, row), params.stop, ended_by_model=ended)

    def _decode_continuation(self, prompt_ids: list[int], new_ids: list[int]) -> str:
        """Decode new tokens in the context of the prompt, so word-start spaces survive."""
        tok = self.tokenizer
        head = tok.decode(prompt_ids, skip_special_tokens=True)
        full = tok.decode(prompt_ids + new_ids, skip_special_tokens=True)
        if full.startswith(head):
            return full[len(head) :]
        return tok.decode(new_ids, skip_special_tokens=True)


class _SeededSampler(LogitsProcessor):
    """Temperature + top-p sampling with one seeded generator per row, as a logits processor.

    Each step it draws every row's next token with that row's own generator
    and leaves only that token selectable (the others get ``-inf``), so
    transformers' greedy loop emits the draw. A row's draws depend on its
    seed and its own logits only, not on the rows batched with it.
    """

    def __init__(self, temperature: float, top_p: float, seeds: list[int], device: Any) -> None:
        import torch
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self.warpers = [TemperatureLogitsWarper(temperature)]
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        scores = scores.float()
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        probs = torch.softmax(scores, dim=-1)
        chosen = torch.stack([torch.multinomial(row, 1, generator=g) for row, g in zip(probs, self.generators)])
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, chosen, 0.0)


class _StopOnGeneratedText(StoppingCriteria):
    """Stop a row once its generated text (prompt excluded) contains a stop string.

    Each step decodes only the last ``longest stop + 2`` generated tokens of
    each row: a stop string completed by the newest token lies within them,
    as every token decodes to at least one character.
    """

    def __init__(self, tokenizer: Any, stop: list[str], prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.prompt_len = prompt_len
        self.window = max(len(s) for s in self.stop) + 2

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        new = input_ids[:, self.prompt_len :]
        if new.shape[1] == 0:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        tails = self.tokenizer.batch_decode(new[:, -self.window :], skip_special_tokens=True)
        hits = [any(s in t for s in self.stop) for t in tails]
        return torch.tensor(hits, dtype=torch.bool, device=input_ids.device)


class _Cancelled(StoppingCriteria):
    """Stop every row once the reader of a stream has gone away (the event is set)."""

    def __init__(self, event: Any) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def _pick_device(device: str):
    """Resolve 'auto' to cuda when available, else cpu."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise BackendError(f"unknown device {device!r}: {normalize_whitespace(str(e))}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device {device!r} requested but CUDA is not available here (use 'cpu' or 'auto')")
    return dev


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """All token ids that end a sequence: the generation config's plus the tokenizer's."""
    ids: set[int] = set()
    cfg_eos = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(cfg_eos, int):
        ids.add(cfg_eos)
    elif cfg_eos:
        ids.update(int(i) for i in cfg_eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def _row_seed(seed: int | None, sample: int) -> int:
    """The generator seed of sample ``sample`` of a prompt with ``seed`` (None: drawn from the global RNG)."""
    if seed is None:
        import torch

        return int(torch.randint(0, 2**62, (1,)).item())
    digest = hashlib.sha256(f"{seed}:{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)
