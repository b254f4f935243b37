"""The model to fine-tune: where it comes from, and how it is prepared before training.

* :func:`resolve_model_dir` turns the config's model value (a directory, a Hub
  id, a ``.gguf`` file or ``gemma3-270m-gguf``) into something
  ``from_pretrained`` loads; GGUF files go through the project's safetensors
  cache (:mod:`pipeline.llm.models`).
* :func:`load_for_training` loads it with every dropout probability in its
  config forced to the configured value *before* the modules are built
  (StarCoder2 copies ``residual_dropout`` into its modules at construction,
  so changing the config afterwards would change nothing), resizes the
  embeddings for added tokens, and turns the KV cache off for training.
"""

from __future__ import annotations

import re
from pathlib import Path

DROPOUT_FIELD = re.compile(r"dropout|pdrop", re.IGNORECASE)


def resolve_model_dir(model: str, cache_dir: str | Path) -> str:
    """A directory or Hub id ``from_pretrained`` can load (GGUF models are converted once to a cache)."""
    from pipeline.llm.models import ensure_gguf_cached, is_gguf, resolve_model

    source = resolve_model(model, cache_dir)
    if is_gguf(source):
        source = str(ensure_gguf_cached(source, cache_dir, "float32"))
    return source


def force_dropout(config, probability: float) -> dict[str, float]:
    """Set every numeric dropout field of ``config`` (and its text sub-config) to ``probability``.

    Returns the fields that changed with their former values. Field names
    differ by architecture (``attention_dropout``, ``residual_dropout``,
    ``embedding_dropout``, ``hidden_dropout``, ``resid_pdrop``, ...); any
    numeric field whose name contains "dropout" or "pdrop" is set.
    """
    changed: dict[str, float] = {}
    configs = [config] + [c for c in (getattr(config, "text_config", None),) if c is not None and c is not config]
    for cfg in configs:
        for key, value in cfg.to_dict().items():
            if DROPOUT_FIELD.search(key) and isinstance(value, (int, float)) and not isinstance(value, bool):
                if value != probability:
                    changed[key] = value
                setattr(cfg, key, probability)
    return changed


def load_for_training(model_dir: str, dtype, dropout: float, vocab_size: int, quantization=None):
    """Load a causal LM for fine-tuning; return ``(model, changed dropout fields)``.

    ``vocab_size`` is the tokenizer's length: the embeddings grow to it when
    tokens were added (new rows start at the mean of the old ones).
    ``quantization`` (a transformers quantization config, for QLoRA) loads the
    weights quantized onto this process's GPU.
    """
    import os

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    changed = force_dropout(config, dropout)
    extra = {}
    if quantization is not None:
        extra = {"quantization_config": quantization, "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}}
    model = AutoModelForCausalLM.from_pretrained(model_dir, config=config, dtype=dtype, **extra)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = dropout
    if vocab_size > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(vocab_size)
    model.config.use_cache = False
    return model, changed


def dropout_values(model) -> dict[str, float]:
    """Every dropout probability the model will apply: config fields and ``nn.Dropout`` modules."""
    import torch

    values = {k: v for k, v in model.config.to_dict().items()
              if DROPOUT_FIELD.search(k) and isinstance(v, (int, float)) and not isinstance(v, bool)}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Dropout):
            values[f"module:{name}"] = module.p
        for attr in ("residual_dropout", "attention_dropout", "embedding_dropout", "dropout"):
            value = getattr(module, attr, None)
            if isinstance(value, float):
                values[f"{name}.{attr}"] = value
    return values
