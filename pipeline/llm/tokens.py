"""Counting prompt tokens and finding a model's context length, without loading any weights.

Used by ``--preflight``. The tokenizer is the model's own wherever it can be
had on this machine:

* a model directory: its tokenizer files;
* a ``.gguf`` file or a package alias such as ``gemma3-270m-gguf``: the
  tokenizer of the safetensors cache when the model was converted already,
  else the tokenizer read from the GGUF file, saved once next to that cache
  (``<cache_dir>/<file stem>-<key>-tokenizer/``) so later preflights load it
  in about a second;
* a Hub id: the local Hugging Face cache only (no download: a preflight on a
  machine without the Hub must not wait for it). Fetch it beforehand with
  ``hf download <id> --include "tokenizer*" config.json`` to count exactly.

When none of these is available the count is an **estimate**:
``ceil(characters / CHARS_PER_TOKEN)``. ``CHARS_PER_TOKEN = 3.0`` is
deliberately low, so the estimate errs towards too many tokens: on this
project's few-shot bank Gemma 3's tokenizer makes 3.19 characters per token
and Qwen2.5-Coder's 3.57 (docs/preflight.md).

The context length is ``model.max_model_len`` when set, else the model's
``max_position_embeddings`` (config.json) or ``<arch>.context_length`` (GGUF
header); None when neither can be read.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.llm.base import BackendError
from pipeline.llm.config import LLMConfig
from pipeline.llm.gguf_header import gguf_context_length
from pipeline.llm.models import gguf_cache_path, is_gguf, resolve_model

CHARS_PER_TOKEN = 3.0


@dataclass
class TokenCounter:
    """Counts the tokens of a prompt (text, or chat messages) with a tokenizer, or estimates them."""

    tokenizer: Any | None
    source: str
    """Where the tokenizer came from, or why the count is estimated."""

    @property
    def exact(self) -> bool:
        """True when a real tokenizer counts."""
        return self.tokenizer is not None

    @property
    def kind(self) -> str:
        """``tokenizer`` or ``estimated`` (shown in the preflight table)."""
        return "tokenizer" if self.exact else "estimated"

    def count(self, prompt: str | list[dict]) -> int:
        """Tokens of a completion prompt (special tokens such as BOS included) or of chat messages."""
        if isinstance(prompt, list):
            if self.tokenizer is not None and getattr(self.tokenizer, "chat_template", None):
                ids = self.tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)
                return len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
            prompt = "\n".join(str(m.get("content", "")) for m in prompt)
        if self.tokenizer is None:
            return math.ceil(len(prompt) / CHARS_PER_TOKEN)
        return len(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])


def _one_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _gguf_tokenizer_dir(gguf: Path, config: LLMConfig) -> Path:
    """A folder holding the GGUF file's tokenizer: the converted model's cache, else a tokenizer-only cache."""
    from transformers import AutoTokenizer

    model_cache = gguf_cache_path(gguf, config.resolved_cache_dir(), config.dtype)
    if (model_cache / "tokenizer_config.json").is_file():
        return model_cache
    target = model_cache.with_name(model_cache.name + "-tokenizer")
    if (target / "tokenizer_config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "tokenizer_config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_token_counter(config: LLMConfig) -> TokenCounter:
    """The model's tokenizer as a :class:`TokenCounter`, or a character estimate saying why (never loads weights)."""
    from transformers import AutoTokenizer

    name = config.tokenizer or config.model
    try:
        source = resolve_model(name)
        if is_gguf(source):
            folder = _gguf_tokenizer_dir(Path(source), config)
            return TokenCounter(AutoTokenizer.from_pretrained(str(folder)), f"tokenizer of {name} ({folder})")
        if Path(source).is_dir():
            return TokenCounter(AutoTokenizer.from_pretrained(source), f"tokenizer of {source}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        except OSError:
            return _estimate(f"{name} is not in the local Hugging Face cache")
        return TokenCounter(tokenizer, f"tokenizer of {source} (local Hugging Face cache)")
    except (OSError, ValueError, BackendError) as exc:
        return _estimate(f"{name}: {_one_line(exc)}")


def _estimate(why: str) -> TokenCounter:
    """A counter that estimates from characters, saying why the tokenizer is not used."""
    return TokenCounter(None, f"estimated, {CHARS_PER_TOKEN:g} characters per token ({why})")


def _config_json(source: str) -> dict | None:
    """A model's config.json from its directory or the local Hugging Face cache, if there."""
    path: Any = Path(source) / "config.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            path = try_to_load_from_cache(source, "config.json")
        except Exception:  # not a valid repo id, no cache: nothing to read
            return None
        if not isinstance(path, str):
            return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def context_length(config: LLMConfig) -> tuple[int | None, str]:
    """``(tokens, where it comes from)`` of the model's context; ``(None, why)`` when it cannot be told."""
    if config.max_model_len:
        return config.max_model_len, "model.max_model_len"
    try:
        source = resolve_model(config.model)
    except BackendError as exc:
        return None, f"unknown ({_one_line(exc)})"
    if is_gguf(source):
        try:
            found = gguf_context_length(source)
        except BackendError as exc:
            return None, f"unknown ({_one_line(exc)})"
        return found, "context_length in the GGUF header"
    data = _config_json(source)
    if data is not None:
        found = data.get("max_position_embeddings") or data.get("text_config", {}).get("max_position_embeddings")
        if found:
            return int(found), "max_position_embeddings of the model's config.json"
    return None, "unknown: set model.max_model_len"
