"""``run_pipeline.py --chat``: which model to talk to, through which backend, then the terminal chat.

Without ``--model`` the model is the one the recipe trained: the newest
stage (last in pipeline order) whose manifest names a ``model_dir``. The
backend and its settings are the recipe's ``model`` section with only the
model replaced (the transformers backend when the recipe has none); for the
``openai`` backend the model is the name the server knows it by (``vllm serve
DIR`` serves a directory under its path).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.chat.session import CHAT_MAX_TOKENS, CHAT_TEMPERATURE, CHAT_TOP_P, ChatSession
from pipeline.chat.terminal import chat_loop
from pipeline.framework.errors import PipelineError
from pipeline.framework.stage import PlannedStage

log = logging.getLogger("pipeline.chat")


def trained_model(runner: Any) -> Path | None:
    """The model directory the recipe's newest finished training wrote, or None."""
    for name in reversed(runner.order):
        if isinstance(runner.entry(name), PlannedStage):
            continue
        manifest = runner.store(name).read_manifest() or {}
        if manifest.get("model_dir") and Path(manifest["model_dir"]).exists():
            return Path(manifest["model_dir"])
    return None


def chat_settings(config: Any, model: str):
    """The recipe's backend settings with ``model`` as the model (transformers when the recipe names no backend,
    or names llama.cpp, which serves GGUF files only, and ``model`` is a model directory)."""
    from pipeline.llm import LLMConfig

    base = getattr(config, "model", None)
    if base is None or (base.backend == "llamacpp" and Path(model).is_dir()):
        # llama.cpp serves GGUF files; a model directory (a fine-tune) loads through transformers
        return LLMConfig(backend="transformers", model=model, show_progress=False)
    return base.model_copy(update={"model": model, "tokenizer": None, "show_progress": False})


def chat_command(config: Any, runner: Any, model: str | None = None, temperature: float | None = None,
                 max_tokens: int | None = None) -> int:
    """Open the terminal chat with ``model`` (default: the recipe's trained model); return the exit code."""
    from pipeline.llm import SamplingParams, create_backend

    if model is None:
        found = trained_model(runner)
        if found is None:
            raise PipelineError(f"no trained model in {config.run.work_dir}: run the recipe's fine-tuning first "
                                "or give --model PATH")
        model = str(found)
    settings = chat_settings(config, model)
    params = SamplingParams(temperature=CHAT_TEMPERATURE if temperature is None else temperature, top_p=CHAT_TOP_P,
                            max_tokens=max_tokens or CHAT_MAX_TOKENS, seed=config.run.seed)
    log.info("chat: loading %s (%s backend)", model, settings.backend)
    with create_backend(settings) as backend:
        return chat_loop(ChatSession(backend, params), f"{model} via {settings.backend}")
