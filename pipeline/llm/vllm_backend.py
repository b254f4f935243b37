"""In-process vLLM engine: the production path on GPUs (the ``vllm`` extra).

A thin adapter over ``vllm.LLM(...).generate(prompts, SamplingParams(...))``
and ``LLM.chat``. vLLM needs CUDA, so this module is UNTESTED on the project's
CPU machines: the tests cover only what runs without vllm (the clear error
when it is missing, and the two pure mapping functions
:func:`vllm_engine_kwargs` and :func:`vllm_sampling_kwargs`). Check it on a
GPU machine before relying on it.

Notes:

* Greedy requests with ``n > 1`` ask vLLM for one sequence and copy it ``n``
  times (all greedy samples are equal anyway; older vLLM versions reject
  ``n > 1`` at temperature 0).
* Stop strings are excluded from the text by vLLM by default; the shared
  :func:`pipeline.llm.base.finalize` cut is applied as well.
* Each prompt gets its own sampling params carrying its seed (``seeds[i]``,
  else ``params.seed``): vLLM then samples each request from its own seeded
  generator, so results do not depend on batching.
* ``gemma3-270m-gguf`` resolves to the packaged GGUF file; vLLM's GGUF support
  may also want ``tokenizer`` set to a tokenizer directory.
"""

from __future__ import annotations

from typing import Any, Sequence

from pipeline.llm.base import Backend, BackendError, Completion, Conversation, SamplingParams, finalize, prompt_seeds
from pipeline.llm.config import LLMConfig
from pipeline.llm.models import resolve_model


def vllm_engine_kwargs(config: LLMConfig) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM(...)`` from an :class:`LLMConfig` (pure function)."""
    kwargs: dict[str, Any] = {
        "model": resolve_model(config.model, config.resolved_cache_dir()),
        "dtype": config.dtype,
        "tensor_parallel_size": config.tensor_parallel_size,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "enforce_eager": config.enforce_eager,
    }
    if config.tokenizer:
        kwargs["tokenizer"] = config.tokenizer
    if config.max_model_len is not None:
        kwargs["max_model_len"] = config.max_model_len
    return kwargs


def vllm_sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams(...)`` (pure function).

    Greedy decoding asks for one sequence (the caller copies it ``params.n``
    times) with ``top_p`` 1.0.
    """
    greedy = params.greedy
    kwargs: dict[str, Any] = {
        "n": 1 if greedy else params.n,
        "temperature": 0.0 if greedy else params.temperature,
        "top_p": 1.0 if greedy else params.top_p,
        "max_tokens": params.max_tokens,
        "stop": list(params.stop),
        "include_stop_str_in_output": False,
    }
    if params.seed is not None:
        kwargs["seed"] = params.seed
    if params.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = params.repetition_penalty
    return kwargs


def _import_vllm() -> Any:
    """Import vllm or raise a one-line BackendError saying how to get it."""
    try:
        import vllm
    except ImportError as e:
        raise BackendError(
            "backend 'vllm' needs the vllm package, which is not installed "
            "(pip install 'selfcodealign-pipeline[vllm]'; needs a CUDA GPU): " + str(e).splitlines()[0]
        ) from e
    return vllm


class VLLMBackend(Backend):
    """Generation with an in-process ``vllm.LLM`` engine."""

    def __init__(self, config: LLMConfig) -> None:
        if config.backend != "vllm":
            raise ValueError(f"VLLMBackend needs backend='vllm', got {config.backend!r}")
        self._vllm = _import_vllm()
        self.config = config
        self._llm = self._vllm.LLM(**vllm_engine_kwargs(config))

    def generate(
        self, prompts: list[str], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """Complete raw text prompts with ``LLM.generate`` (one sampling params per prompt, with its seed)."""
        sampling = self._sampling(params, len(prompts), seeds)
        outputs = self._engine().generate(prompts, sampling, use_tqdm=self.config.show_progress)
        return [self._completions(o, params) for o in outputs]

    def generate_chat(
        self, conversations: list[Conversation], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """Answer conversations with ``LLM.chat`` (the model's chat template), one sampling params each."""
        sampling = self._sampling(params, len(conversations), seeds)
        outputs = self._engine().chat(conversations, sampling, use_tqdm=self.config.show_progress)
        return [self._completions(o, params) for o in outputs]

    def close(self) -> None:
        """Drop the engine (vLLM frees GPU memory when it is garbage collected)."""
        self._llm = None

    def _engine(self) -> Any:
        if self._llm is None:
            raise BackendError("backend is closed")
        return self._llm

    def _sampling(self, params: SamplingParams, count: int, seeds: Sequence[int] | None) -> list[Any]:
        """One ``vllm.SamplingParams`` per prompt, each with that prompt's seed."""
        return [self._vllm.SamplingParams(**vllm_sampling_kwargs(params.model_copy(update={"seed": seed})))
                for seed in prompt_seeds(count, params, seeds)]

    @staticmethod
    def _completions(request_output: Any, params: SamplingParams) -> list[Completion]:
        outs = [
            finalize(o.text, params.stop, ended_by_model=o.finish_reason != "length") for o in request_output.outputs
        ]
        if len(outs) < params.n and outs:
            outs = (outs * params.n)[: params.n]
        return outs
