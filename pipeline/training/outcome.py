"""What a fine-tune reports: the loss log and curve in the stage's folder, and its manifest fields.

The manifest's counts come from the committed rows (one per conversation); ``stats`` adds the steps, tokens
and losses; ``model_dir`` says where the model is (the evaluate stage and ``--chat`` read it); ``training``
holds the run's facts: steps, epochs, losses, speed, the fit estimate, the objective's own metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.framework.processes import world_size
from pipeline.training.preference import preference_metrics
from pipeline.training.rewards import reward_metrics


def run_facts(cfg: Any, run: Any, *, base_model: str, model_dir: str, bf16: bool, cuda: bool, added_tokens: int,
              fit: dict | None, hub_repo: str | None, examples: int, adapter_dir: Path | None) -> dict:
    """The facts of one training run (``run``: a :class:`pipeline.training.trainers.TrainingRun`) for the manifest."""
    args, trainer = run.args, run.trainer
    facts = {"objective": cfg.objective, "base_model": base_model, "resolved_from": model_dir,
             "chat_format": cfg.chat_format,
             "resumed_from": run.resumed_from, "bf16": bf16, "device": "cuda" if cuda else "cpu",
             "dropout_forced": run.dropout_forced, "added_tokens": added_tokens, "fit_estimate": fit,
             "hub_repo": hub_repo, "examples_per_epoch": examples, "rows_per_epoch": len(trainer.train_dataset),
             "adapter": cfg.adapter, "adapter_dir": str(adapter_dir) if adapter_dir else None,
             "processes": world_size(), "gradient_accumulation_per_process": args.gradient_accumulation_steps,
             "effective_batch": args.per_device_train_batch_size * args.gradient_accumulation_steps * world_size()}
    if cfg.preference:
        facts["dpo"] = {**cfg.dpo.model_dump(), **preference_metrics(trainer.state.log_history)}
    if cfg.reinforced:
        facts["grpo"] = {**cfg.grpo.model_dump(exclude={"sandbox"}), **reward_metrics(trainer.state.log_history)}
    return facts


def training_fields(store, state, mean_loss: float, runtime: float, model_dir: Path, facts: dict, title: str) -> dict:
    """Write the loss log and curve into the stage's folder; return the manifest fields."""
    from pipeline.training.plot import loss_points, plot_loss

    history = state.log_history
    (store.dir / "train_log.json").write_text(json.dumps(history, indent=1) + "\n")
    png = plot_loss(history, store.dir / "loss.png", title)
    _, losses = loss_points(history)
    fields = store.commit_log().manifest_fields()
    per_epoch = fields["stats"].get("train_tokens_per_epoch", 0)
    epochs = float(state.epoch or 0)
    metrics = {
        "train_steps": int(state.global_step),
        "train_tokens": int(round(per_epoch * epochs)),
        "final_loss": round(losses[-1], 4) if losses else None,
        "mean_loss": round(mean_loss, 4),
        "train_runtime_s": round(runtime, 1),
    }
    fields["stats"].update({k: v for k, v in metrics.items() if v is not None})
    fields["model_dir"] = str(model_dir)  # where downstream stages (evaluate) find the model
    fields["training"] = {
        "model_dir": str(model_dir), "global_step": int(state.global_step),
        "total_steps_planned": int(state.max_steps), "epochs": round(epochs, 3),
        "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
        "loss_png": str(png) if png else None,
        "tokens_per_second": round(per_epoch * epochs / runtime, 1)
        if runtime > 0 and not facts["resumed_from"] else None,
        **facts,
    }
    return fields
