"""Generation backends behind one interface.

Usage::

    from pipeline.llm import LLMConfig, SamplingParams, create_backend

    with create_backend(LLMConfig(backend="transformers", model="gemma3-270m-gguf")) as llm:
        outs = llm.generate(["def add(a, b):"], SamplingParams(n=2, temperature=0.7, max_tokens=64, stop=["\\ndef "]))
        outs[0][1].text, outs[0][1].finish_reason

Backends: ``transformers`` (local, batched; CPU path), ``openai`` (any
OpenAI-compatible server), ``llamacpp`` (the pipeline serves a GGUF model
with llama.cpp, continuous batching on the CPU; optional extra), ``vllm``
(in-process engine, GPU; optional extra).
Each backend module is imported only when asked for, so importing this
package does not import torch, openai or vllm.
"""

from __future__ import annotations

from pipeline.llm.base import (
    Backend,
    BackendError,
    Completion,
    Conversation,
    FinishReason,
    SamplingParams,
    apply_stop,
)
from pipeline.llm.config import GEMMA_GGUF_MODEL, QWEN_CODER_GGUF_MODEL, LLMConfig

__all__ = [
    "GEMMA_GGUF_MODEL",
    "QWEN_CODER_GGUF_MODEL",
    "Backend",
    "BackendError",
    "Completion",
    "Conversation",
    "FinishReason",
    "LLMConfig",
    "SamplingParams",
    "apply_stop",
    "create_backend",
]


def create_backend(config: LLMConfig) -> Backend:
    """Build the backend ``config.backend`` names, loading its model or client.

    Raises :class:`BackendError` when the backend cannot start (missing
    package, model not found).
    """
    if config.backend == "transformers":
        from pipeline.llm.transformers_backend import TransformersBackend

        return TransformersBackend(config)
    if config.backend == "openai":
        from pipeline.llm.openai_backend import OpenAIBackend

        return OpenAIBackend(config)
    if config.backend == "llamacpp":
        from pipeline.llm.llamacpp_backend import LlamaCppBackend

        return LlamaCppBackend(config)
    if config.backend == "vllm":
        from pipeline.llm.vllm_backend import VLLMBackend

        return VLLMBackend(config)
    raise ValueError(f"unknown backend {config.backend!r}")  # unreachable: LLMConfig validates it
