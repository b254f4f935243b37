"""Where a fine-tune ends up: the model saved for generation, and found again from the stage's manifest.

The finetune stage saves model, tokenizer and chat template together in ``finetune/model/`` (with an
adapter: the adapter in ``finetune/adapter/`` and the merged model in ``finetune/model/``), and names that
folder in its manifest's ``model_dir``; whoever evaluates or serves the fine-tune reads it back from there.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.framework.errors import PipelineError
from pipeline.framework.processes import is_main_process
from pipeline.llm.gguf_export import copy_gguf_source

log = logging.getLogger("pipeline.finetune")


def save_for_generation(trainer, encoder, folder: Path, base_dir: str, dtype, adapter: str,
                        dropout: float) -> tuple[Path, Path | None]:
    """Save model, tokenizer and chat template together (atomically replacing any earlier save).

    The model stops at the chat format's end markers. With an adapter, the adapter goes to ``adapter/`` and the
    base with the adapter merged in to ``model/``. The model folder keeps the base's record of the GGUF it came
    from, if any, so llama.cpp can serve the fine-tune with that GGUF as template. Returns ``(model folder,
    adapter folder or None)``.
    """
    from pipeline.training.adapters import merge_adapter
    from pipeline.training.distributed import save_plain, save_with_trainer

    tokenizer, stops = encoder.tokenizer, encoder.stop_token_ids

    def for_generation(model):
        model.config.use_cache = True
        model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        return model

    adapter_dir = None
    if adapter == "none":
        for_generation(trainer.model)
        save_with_trainer(trainer, tokenizer, folder / "model")
    else:
        adapter_dir = save_with_trainer(trainer, tokenizer, folder / "adapter")
        if is_main_process():
            merged = merge_adapter(base_dir, adapter_dir, dtype, dropout, len(tokenizer))
            save_plain(for_generation(merged), tokenizer, folder / "model")
            log.info("finetune: adapter saved in %s, merged model in %s", adapter_dir, folder / "model")
    if is_main_process():
        copy_gguf_source(base_dir, folder / "model")
    return folder / "model", adapter_dir


def finetuned_model_dir(store) -> Path:
    """The folder the finetune stage (``store``: its output folder) saved its model to; a clear error when none."""
    manifest = store.read_manifest()
    if manifest is None:
        raise PipelineError(f"a model is 'finetuned' but stage {store.stage} has not finished: run it first "
                            f"(--stage {store.stage}), or evaluate other models with "
                            "-o stages.evaluate.evaluate_finetuned=false --input humaneval")
    model_dir = Path(manifest.get("model_dir") or store.dir / "model")
    if not model_dir.is_absolute() and not model_dir.exists() and (store.dir / model_dir).exists():
        model_dir = store.dir / model_dir
    if not model_dir.exists():
        raise PipelineError(f"stage {store.stage} finished but its model directory {model_dir} does not exist")
    return model_dir
