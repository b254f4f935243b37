"""finetune: supervised fine-tuning of the base model on the conversations it wrote itself.

Full fine-tuning with transformers' Trainer and the Adafactor optimizer, as
in the paper: learning rate 1e-5, 4 epochs, an effective batch of 64
conversations (1 per step, 64 accumulated), 5% warm-up then a linear decay,
sequences of at most 1280 tokens, bfloat16 where the device has it (float32
on CPU) and every dropout of the model forced to 0.

The conversations come from the upstream stage, ``--input``, or the dataset
``conversations.dataset`` names (a file, folder or Hub id); OpenAssistant
message tables and Dolly-style instruction tables are first turned into
conversations (:mod:`pipeline.conversations`), and what that kept and dropped,
by reason, is the manifest's ``conversations`` section (the dropped rows are
kept in ``finetune/source_dropped/``).

Each conversation (the ``messages`` column: any number of system, user and
assistant turns) is rendered with a chat format (the plain
instruction/response layout by default, a ChatML-style one with special
tokens as an option) and tokenised; the loss is computed on the assistant
answers only, their end markers included: every system and user token is
labelled -100. Special-token text inside a turn (a user typing
``<|assistant|>``) is tokenised as plain text: only the template writes
control tokens. Conversations longer than ``max_length`` tokens are truncated
(or dropped, ``overflow: drop``); one row per conversation records its token
count and what became of it (``kept``, ``truncated``; dropped ones under
``dropped/`` with their reason).

Before the model is loaded, its memory need (weights, gradients, Adafactor's
factored state, activations with or without gradient checkpointing) is
estimated, printed and compared with the device's memory; a run that cannot
fit stops at once. Checkpoints go to ``finetune/checkpoints/``: rerunning the
same command after a crash resumes from the last one. The result, model,
tokenizer and chat template together, is saved in ``finetune/model/``, so
``AutoTokenizer.from_pretrained(...).apply_chat_template(messages)`` renders
conversations exactly as in training; the loss curve is ``finetune/loss.png``.

Beyond one device (``accelerate launch`` with a layout from
``configs/accelerate/``: DDP, FSDP, DeepSpeed ZeRO-3) every process trains
and only the main one writes rows, checkpoints' shared files, the model and
the manifest; the accumulation is divided among the processes so the
effective batch stays the recipe's. ``adapter: lora`` (or ``qlora``) trains
PEFT adapters only, saved in ``finetune/adapter/``, and ``finetune/model/``
then holds the base with the adapter merged in.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipeline.conversations import ConversationSource
from pipeline.framework.errors import PipelineError
from pipeline.framework.processes import is_main_process, world_size
from pipeline.framework.stage import WholeStage
from pipeline.framework.store import PartWriter
from pipeline.training.data import load_encoder
from pipeline.training.fit import fit_summary, memory_check
from pipeline.training.outcome import run_facts, training_fields
from pipeline.training.preference import PAIR_COLUMNS, encode_pair
from pipeline.training.settings import FinetuneConfig


class FinetuneStage(WholeStage):
    """Fine-tune the model on the conversations, loss on the answers only."""

    name = "finetune"
    title = "Supervised fine-tuning with Adafactor, loss on the answers only"
    upstream = "dedup"
    Config = FinetuneConfig
    uses_model = True
    multi_process = True  # accelerate launch: every process trains, the main one writes
    input_columns = {"id": "conversation id", "messages": "the conversation: a list of {role, content} turns"}
    output_columns = {
        "id": (pa.string(), "the conversation id"),
        "n_tokens": (pa.int64(), "tokens of the rendered conversation, before truncation"),
        "n_train_tokens": (pa.int64(), "tokens trained on (after truncation)"),
        "n_label_tokens": (pa.int64(), "answer tokens that carry the loss"),
        "status": (pa.string(), "kept or truncated"),
    }

    def __init__(self, config, pipeline_config):
        """Keep the ``hub`` section too: the model can be pushed to the Hub; the title names the objective."""
        super().__init__(config, pipeline_config)
        self.hub_config = getattr(pipeline_config, "hub", None)
        if self.config.preference:
            self.title = "Preference tuning (DPO) on chosen/rejected answer pairs"
        elif self.config.reinforced:
            self.title = "Reinforcement learning (GRPO) with the sandbox's test results as the reward"

    # -- what it trains on -------------------------------------------------------
    def reads_from(self) -> str | None:
        """The preferences stage's pairs for ``objective: dpo``, else the conversations of ``upstream``."""
        return "preferences" if self.config.preference else self.upstream

    def needed_columns(self) -> list[str]:
        """Pair columns for DPO; the conversation and its kept ``tests`` for GRPO; else ``id`` and ``messages``."""
        if self.config.preference:
            return ["id", *PAIR_COLUMNS]
        return [*super().needed_columns(), "tests"] if self.config.reinforced else super().needed_columns()

    def configured_input(self) -> str | None:
        """``conversations.dataset``, when the recipe trains on a dataset instead of the pipeline's own output."""
        return None if self.config.preference or self.config.reinforced else self.config.conversations.dataset

    def input_source(self, ctx, override: str | None):
        """The input (upstream, ``--input`` or the configured dataset) read as conversations, whatever its layout.

        Preference pairs, and conversations with their tests for GRPO, are read as they are.
        """
        inner = super().input_source(ctx, override)
        if override is not None and override == self.configured_input():
            inner.description = f"{override} (stages.{self.name}.conversations.dataset)"
        if self.config.preference or self.config.reinforced:
            return inner
        return ConversationSource(inner, self.config.conversations)

    def model_name(self) -> str:
        """The model to fine-tune: ``base_model`` if set, else the top-level ``model.model``."""
        name = self.config.base_model or (self.model_config.model if self.model_config else None)
        if not name:
            raise PipelineError("finetune needs a model: set model.model or stages.finetune.base_model")
        return name

    def cache_dir(self) -> Path:
        """Where GGUF models are converted to safetensors."""
        from pipeline.llm.config import default_cache_dir

        return self.model_config.resolved_cache_dir() if self.model_config else default_cache_dir()

    def preflight_checks(self, ctx) -> list:
        """The memory fit on the configured device (no weights loaded), and the Hub repository when pushing."""
        from pipeline.publishing.model import repository_check

        checks = [memory_check(self.config, self.name, self.model_name(), self.cache_dir())]
        if self.config.push_to_hub:
            checks.append(repository_check(self.name, self.hub_config, self.config.hub_model_name))
        return checks

    # -- the step ---------------------------------------------------------------
    def run(self, ctx) -> dict:
        """Encode the conversations, check the fit, train (resuming a crashed run), save and report."""
        import torch

        from pipeline.publishing.model import model_repo_id, push_model
        from pipeline.training.distributed import check_layout_device
        from pipeline.training.layouts import launched_layout
        from pipeline.training.modeling import resolve_model_dir
        from pipeline.training.saving import save_for_generation
        from pipeline.training.trainers import train

        cfg, store = self.config, ctx.store
        if cfg.push_to_hub:
            model_repo_id(self.hub_config, cfg.hub_model_name)  # fail now, not after hours of training
        model_dir = resolve_model_dir(self.model_name(), self.cache_dir())
        encoder = load_encoder(model_dir, cfg.chat_format, cfg.system_prompt, cfg.use_default_system)
        encoded = [(row, encode_pair(encoder, row, cfg.max_length, cfg.overflow) if cfg.preference
                    else encoder.encode(row["messages"], cfg.max_length, cfg.overflow))
                   for row in ctx.source.iter_rows()]
        if is_main_process():
            self.write_rows(store, encoded)
            if self.run_config.keep_dropped and not (cfg.preference or cfg.reinforced):
                ctx.source.save_dropped(store.dir / "source_dropped")
        examples = [enc for _, enc in encoded if enc.kept]
        if not encoded:
            raise PipelineError("finetune: the input holds no conversations (the upstream stages kept none, "
                                "see --status for where rows were dropped); there is nothing to train on")
        if not examples:
            raise PipelineError(f"finetune: none of the {len(encoded)} input conversations can be trained on "
                                "(see finetune/dropped/ for the reasons)")
        cuda = torch.cuda.is_available()
        check_layout_device(launched_layout(cfg.adapter), cuda)
        bf16 = bool(cfg.bf16 and cuda and torch.cuda.is_bf16_supported())
        fit = fit_summary(cfg, model_dir, self.model_name(), encoder.added_tokens, world_size(), bf16, cuda)
        run = train(cfg, model_dir, encoder, [row for row, enc in encoded if enc.kept], examples,
                    store.dir / "checkpoints", bf16=bf16, cuda=cuda, seed=self.seed, work_dir=self.run_config.work_dir)
        out, adapter_dir = save_for_generation(run.trainer, encoder, store.dir, model_dir, run.dtype, cfg.adapter,
                                               cfg.dropout)
        if not is_main_process():
            return {}
        repo = push_model(self.hub_config, out, cfg.hub_model_name) if cfg.push_to_hub else None
        facts = run_facts(cfg, run, base_model=self.model_name(), model_dir=model_dir, bf16=bf16, cuda=cuda,
                          added_tokens=encoder.added_tokens, fit=fit, hub_repo=repo, examples=len(examples),
                          adapter_dir=adapter_dir)
        fields = training_fields(store, run.trainer.state, run.mean_loss, run.runtime, out, facts,
                                 f"{ctx.pipeline_config.name}: finetune")
        if not (cfg.preference or cfg.reinforced):
            fields["conversations"] = ctx.source.report()
        return fields

    def write_rows(self, store, encoded: list) -> None:
        """One row per conversation: kept and truncated ones in the parts, dropped ones under dropped/."""
        store.reset_parts()
        writer = PartWriter(store, self.output_schema(), self.run_config.keep_dropped)
        for row, enc in encoded:
            record = {"id": row["id"], "n_tokens": enc.n_tokens, "n_train_tokens": len(enc.input_ids),
                      "n_label_tokens": enc.n_label_tokens, "status": enc.status}
            if enc.kept:
                writer.add([row["id"]], [record], stats={"train_tokens_per_epoch": len(enc.input_ids),
                                                         "label_tokens_per_epoch": enc.n_label_tokens,
                                                         "truncated": int(enc.status == "truncated")})
            else:
                writer.add([row["id"]], dropped=[{**record, "drop_reason": enc.drop_reason}],
                           stats={"train_tokens_per_epoch": 0, "label_tokens_per_epoch": 0, "truncated": 0})
        writer.close()
