"""Adapters: LoRA and QLoRA fine-tuning through PEFT, and the merged model made from an adapter.

With ``adapter: lora`` the base model's weights are frozen and low-rank
matrices (rank ``lora_r``, scale ``lora_alpha / lora_r``, dropout
``lora_dropout``) are added to the ``lora_target_modules``; only those train.
``adapter: qlora`` loads the frozen base in 4-bit NF4 (bitsandbytes, CUDA
only) and trains the same adapter in bfloat16. When the chat format added
tokens to the tokenizer, the (resized) input and output embeddings train in
full as well, or the new tokens would keep their initial rows.

The stage saves the adapter (``finetune/adapter/``, small, what PEFT loads)
and a merged model (``finetune/model/``): the base in bfloat16/float32 with
the adapter folded into its weights, a plain model that evaluate, ``--chat``
and publishing load like any other. Merging reloads the base on the CPU, so
a 4-bit training run still yields a full-precision merged model.

This module needs only torch, transformers and peft (the GPU check imports
it); the stage's settings are in :mod:`pipeline.training.adapter_options`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.framework.errors import PipelineError

log = logging.getLogger("pipeline.finetune")


def quantization_config():
    """The 4-bit NF4 loading config of QLoRA; a one-line error where CUDA or bitsandbytes is missing."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise PipelineError("finetune: adapter 'qlora' needs a CUDA GPU (4-bit weights come from bitsandbytes); "
                            "use adapter 'lora' on this machine")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise PipelineError("finetune: adapter 'qlora' needs bitsandbytes (pip install bitsandbytes)")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def embedding_module_names(model) -> list[str]:
    """Names of the input and output embedding modules (trained in full when tokens were added)."""
    wanted = {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if id(module) in wanted})


def attach_adapter(model, options, *, train_embeddings: bool, checkpointing: bool):
    """Freeze ``model`` and wrap it with a LoRA adapter; return the PEFT model.

    ``options`` holds the fields of :class:`pipeline.training.adapter_options.AdapterOptions` (``adapter``,
    ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``); any object with them will do.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if options.adapter == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    elif checkpointing:
        model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
    config = LoraConfig(
        r=options.lora_r, lora_alpha=options.lora_alpha, lora_dropout=options.lora_dropout,
        target_modules=options.lora_target_modules, bias="none", task_type="CAUSAL_LM",
        modules_to_save=embedding_module_names(model) if train_embeddings else None,
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as exc:  # e.g. a target module name the model lacks
        raise PipelineError(f"finetune: lora_target_modules {options.lora_target_modules!r}: "
                            f"{str(exc).splitlines()[0]}") from None
    trainable, total = peft_model.get_nb_trainable_parameters()
    log.info("finetune: %s adapter (r=%d, alpha=%s) on %s: %s of %s parameters train (%.3f%%)", options.adapter,
             options.lora_r, options.lora_alpha, options.lora_target_modules, f"{trainable:,}", f"{total:,}",
             100 * trainable / max(total, 1))
    return peft_model


def merge_adapter(model_dir: str, adapter_dir: Path, dtype, dropout: float, vocab_size: int):
    """The base from ``model_dir``, loaded on the CPU, with the adapter in ``adapter_dir`` folded into its weights."""
    from peft import PeftModel

    from pipeline.training.modeling import load_for_training

    base, _ = load_for_training(model_dir, dtype, dropout, vocab_size)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
