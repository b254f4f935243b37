"""The models an evaluation compares ("contenders"): what each is, how to load it, how to prompt it.

A model entry names ``base`` (the recipe's ``model`` section), ``finetuned``
(the directory the finetune stage saved), or anything the backends load: a
model directory, a package model alias (``gemma3-270m-gguf``), a ``.gguf``
file, a Hub id, or the served name on an OpenAI-compatible endpoint (with
``settings: {backend: openai, base_url: ...}``). ``settings`` overrides any
field of the ``model`` section for this model alone.

Prompt format ``auto``: completion for ``base``; chat for ``finetuned``, for
an OpenAI-compatible endpoint, and for a model directory whose tokenizer
carries a chat template; completion otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.framework.config import first_problem
from pipeline.framework.errors import PipelineError

BASE, FINETUNED = "base", "finetuned"


class ModelEntry(BaseModel):
    """One model to evaluate."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(description="base, finetuned, a model directory, a package alias, a .gguf file, a Hub id, "
                                   "or an endpoint's served model name.")
    label: str | None = Field(default=None, description="Its name in tables (default: base, finetuned, or the "
                                                        "model's last path component).")
    prompt_format: Literal["auto", "completion", "chat"] = Field(default="auto", description="How it is prompted.")
    settings: dict[str, Any] = Field(default_factory=dict, description="Model-section fields that differ for it "
                                                                       "(backend, base_url, dtype, ...).")


@dataclass(frozen=True)
class Contender:
    """One model under evaluation: its label, how to load it, where it lives, and how to prompt it."""

    label: str
    llm_config: Any
    model_path: str
    prompt_format: str


def has_chat_template(model: str) -> bool:
    """Whether a local model directory's tokenizer carries a chat template."""
    folder = Path(model)
    if not folder.is_dir():
        return False
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    try:
        return bool(config.is_file() and json.loads(config.read_text()).get("chat_template"))
    except (OSError, ValueError):
        return False


def resolve(entry: ModelEntry, base_config, finetuned_dir, config_class) -> Contender:
    """The contender an entry names; ``finetuned_dir`` is called only when the entry is ``finetuned``.

    ``base_config`` is the recipe's model section (None when it has none: then
    the entry's settings must name a backend).
    """
    label = entry.label or (entry.model if entry.model in (BASE, FINETUNED) else Path(entry.model).name or entry.model)
    if entry.model == BASE:
        if base_config is None:
            raise PipelineError("stages.evaluate.models: 'base' needs a model section (model.backend, model.model)")
        update, path = dict(entry.settings), base_config.model
    else:
        path = str(finetuned_dir()) if entry.model == FINETUNED else entry.model
        update = {"model": path, "tokenizer": None, **entry.settings}
    fields = {**(base_config.model_dump() if base_config is not None else {}), **update}
    try:
        llm_config = config_class.model_validate(fields)
    except ValidationError as exc:
        raise PipelineError(f"stages.evaluate.models ({label}): {first_problem(exc)}") from None
    fmt = entry.prompt_format
    if fmt == "auto":
        chatty = entry.model == FINETUNED or llm_config.backend == "openai" or has_chat_template(path)
        fmt = "completion" if entry.model == BASE else "chat" if chatty else "completion"
    return Contender(label, llm_config, path, fmt)
