"""The trainer of a fine-tune: its arguments from the recipe, the model prepared, the objective's trainer, the run.

* SFT: transformers' ``Trainer`` over the encoded conversations (one row each, or packed), padded per batch;
* DPO: trl's ``DPOTrainer`` over the preference pairs (:mod:`pipeline.training.preference`);
* GRPO: trl's ``GRPOTrainer``, rewarded by the sandbox (:mod:`pipeline.training.rewards`).

Gradient accumulation is shared among the processes of a launch, so the effective batch stays the recipe's;
a run after a crash resumes from the last complete checkpoint.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.framework.processes import world_size

log = logging.getLogger("pipeline.finetune")


def training_arguments(cfg: Any, out_dir: Path, bf16: bool, cuda: bool, seed: int):
    """transformers ``TrainingArguments`` (trl's ``DPOConfig`` / ``GRPOConfig``) for the recipe ``cfg``."""
    from transformers import TrainingArguments

    from pipeline.training.distributed import accumulation_per_process
    from pipeline.training.preference import dpo_arguments_class, dpo_settings, require_trl
    from pipeline.training.rewards import grpo_settings

    args_class, extra = TrainingArguments, {}
    if cfg.preference:
        args_class, extra = dpo_arguments_class(), dpo_settings(cfg.dpo, cfg.max_length)
    elif cfg.reinforced:
        args_class, extra = require_trl("grpo").GRPOConfig, grpo_settings(cfg.grpo)
    return args_class(
        **extra,
        output_dir=str(out_dir),
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=accumulation_per_process(cfg.per_device_batch_size,
                                                             cfg.gradient_accumulation_steps, world_size()),
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,
        optim=cfg.optimizer,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm or 0.0,  # 0 switches the Trainer's clipping off
        bf16=bf16,
        use_cpu=not cuda,
        activation_checkpointing=cfg.gradient_checkpointing,
        train_sampling_strategy="group_by_length" if cfg.batching == "group_by_length" else "random",
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=seed,
        data_seed=seed,
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def training_rows(cfg: Any, examples: list) -> list[dict]:
    """The trainer's rows: one per encoded conversation, or conversations packed per row (``batching: pack``)."""
    from pipeline.training.data import pack, plain_rows

    return pack(examples, cfg.max_length) if cfg.batching == "pack" else plain_rows(examples)


@dataclass
class TrainingRun:
    """What one training run gives: the trainer (its state and log), its arguments and facts about the run."""

    trainer: Any
    args: Any
    mean_loss: float
    runtime: float
    resumed_from: str | None
    dropout_forced: dict
    dtype: Any


def train(cfg: Any, model_dir: str, encoder, rows: list[dict], examples: list, checkpoints: Path, *, bf16: bool,
          cuda: bool, seed: int, work_dir: Path) -> TrainingRun:
    """Load the model from ``model_dir``, build the objective's trainer and train it, resuming from ``checkpoints``.

    ``rows`` are the kept input rows (pairs for DPO, conversations with tests for GRPO); ``examples`` their
    encodings (what SFT trains on).
    """
    import torch
    from transformers import Trainer

    from pipeline.training.adapters import attach_adapter, quantization_config
    from pipeline.training.data import ConversationDataset, PaddingCollator
    from pipeline.training.distributed import resume_checkpoint
    from pipeline.training.modeling import load_for_training

    tokenizer = encoder.tokenizer
    dtype = torch.bfloat16 if bf16 else torch.float32
    args = training_arguments(cfg, checkpoints, bf16, cuda, seed)  # first: under ZeRO-3 the model then loads sharded
    model, forced = load_for_training(model_dir, dtype, cfg.dropout, len(tokenizer),
                                      quantization_config() if cfg.adapter == "qlora" else None)
    if forced:
        log.info("finetune: dropout forced to %s (was %s)", cfg.dropout, forced)
    if cfg.adapter != "none":
        model = attach_adapter(model, cfg, train_embeddings=encoder.added_tokens > 0,
                               checkpointing=cfg.gradient_checkpointing)
    session = None
    if cfg.preference:
        from pipeline.training.preference import dpo_trainer

        trainer = dpo_trainer(model, args, rows, tokenizer)
    elif cfg.reinforced:
        from pipeline.execution.verdicts import SandboxSession
        from pipeline.training.rewards import SandboxReward, grpo_trainer

        session = SandboxSession(cfg.grpo.sandbox, work_dir).open()
        trainer = grpo_trainer(model, args, rows, tokenizer, SandboxReward(session, cfg.grpo.drop_stdin_main))
    else:
        trainer = Trainer(model=model, args=args, train_dataset=ConversationDataset(training_rows(cfg, examples)),
                          data_collator=PaddingCollator(tokenizer.pad_token_id, 8 if cuda else None),
                          processing_class=tokenizer)
    last = resume_checkpoint(checkpoints)
    last = str(last) if last else None
    if last:
        log.info("finetune: resuming from %s", last)
    started = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=last)
    finally:
        if session is not None:
            session.close()
    return TrainingRun(trainer, args, float(result.training_loss), time.time() - started, last, forced, dtype)
