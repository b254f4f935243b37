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

import dataclasses
import json
import time
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import Field

from pipeline.conversations import ConversationSource, ConversationsConfig
from pipeline.framework.config import not_fingerprinted
from pipeline.framework.errors import PipelineError
from pipeline.framework.ids import stable_id
from pipeline.framework.map_runner import manifest_fields
from pipeline.framework.processes import is_main_process, world_size
from pipeline.framework.stage import WholeStage
from pipeline.training import layouts, memory
from pipeline.training.adapter_options import AdapterOptions
from pipeline.training.data import (
    ConversationDataset, ConversationEncoder, Encoded, PaddingCollator, pack, plain_rows,
)
from pipeline.training.preference import PAIR_COLUMNS, DpoOptions, EncodedPair, encode_pair, preference_metrics
from pipeline.training.rewards import GrpoOptions, reward_metrics

PART_ROWS = 10_000


class FinetuneConfig(AdapterOptions):
    """Settings of the finetune stage (defaults: the paper's recipe)."""

    objective: Literal["sft", "dpo", "grpo"] = Field(
        default="sft",
        description="'sft': supervised fine-tuning on the conversations (the paper); 'dpo': preference training "
                    "(trl's DPO) on the pairs of the preferences stage, from base_model (e.g. the SFT model) "
                    "against itself frozen as the reference; 'grpo': reinforcement learning (trl's GRPO) on the "
                    "upstream's instructions, rewarded by the share of their kept tests each sampled answer passes "
                    "in the sandbox.")
    dpo: DpoOptions = Field(default_factory=DpoOptions, description="Settings of objective 'dpo'.")
    grpo: GrpoOptions = Field(default_factory=GrpoOptions, description="Settings of objective 'grpo'.")
    conversations: ConversationsConfig = Field(
        default_factory=ConversationsConfig,
        description="Where the conversations come from (default: the upstream output) and how OpenAssistant or "
                    "instruction tables become conversations.")
    base_model: str | None = Field(
        default=None, description="Model to fine-tune (directory, Hub id, .gguf, or a model alias such as 'gemma3-270m-gguf'); default: model.model.")
    chat_format: Literal["instruction", "starcoder2-instruct", "chatml"] = Field(
        default="instruction",
        description="'instruction': ### Instruction / ### Response blocks; 'starcoder2-instruct': the released "
                    "StarCoder2-15B-Instruct format (BOS, its system line, the same blocks, EOS); 'chatml': <|system|> <|user|> "
                    "<|assistant|> <|end|> special tokens (added to the tokenizer when missing).")
    system_prompt: str | None = Field(
        default=None, description="Preamble for conversations without a system turn; default: the format's own.")
    use_default_system: bool = Field(
        default=True, description="Render the format's preamble when a conversation has no system turn.")
    optimizer: Literal["adafactor", "adamw_torch"] = Field(
        default="adafactor",
        description="Optimizer: Adafactor, as in the paper; AdamW for recipes that used it (StarChat).")
    learning_rate: float = Field(default=1e-5, gt=0, description="Peak learning rate.")
    num_epochs: float = Field(default=4.0, gt=0, description="Passes over the data.")
    max_steps: int | None = Field(default=None, gt=0, description="Stop after this many optimizer steps (overrides num_epochs).")
    per_device_batch_size: int = Field(default=1, ge=1, description="Conversations (or packed rows) per forward pass.")
    gradient_accumulation_steps: int = Field(default=64, ge=1, description="Forward passes per optimizer step.")
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1, description="Share of the steps spent warming up.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        default="linear", description="Learning-rate schedule after warm-up.")
    weight_decay: float = Field(default=0.0, ge=0, description="Weight decay.")
    max_grad_norm: float | None = Field(
        default=None, gt=0, description="Gradient clipping norm; None: no clipping, as published."
    )
    max_length: int = Field(default=1280, ge=8, description="Tokens per conversation at most.")
    overflow: Literal["truncate", "drop"] = Field(
        default="truncate", description="What to do with longer conversations: cut them, or drop them.")
    bf16: bool = Field(default=True, description="Train in bfloat16 where the device supports it; float32 on CPU.")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Every dropout probability of the model is set to this.")
    batching: Literal["pad", "group_by_length", "pack"] = Field(
        default="pad", description="Batches padded in sampler order, length-grouped, or conversations packed per row.")
    gradient_checkpointing: bool = not_fingerprinted(
        "Recompute activations in the backward pass to save memory.", default=True)
    save_steps: int = not_fingerprinted("Save a checkpoint every this many optimizer steps.", default=50, gt=0)
    save_total_limit: int = not_fingerprinted("Checkpoints kept (oldest removed).", default=2, ge=1)
    logging_steps: int = not_fingerprinted("Log the loss every this many optimizer steps.", default=1, ge=1)
    fit_check: bool = not_fingerprinted(
        "Estimate memory before loading and stop when the model cannot fit.", default=True)
    device_memory_gib: float | None = not_fingerprinted(
        "Memory of each training GPU in GiB, for --preflight's fit check when training runs on other hardware "
        "than the preflight (e.g. 80 for an A100 80GB); unset: this machine's free CUDA memory, else its RAM.",
        default=None, gt=0)
    push_to_hub: bool = not_fingerprinted(
        "Upload finetune/model to <hub.namespace>/<hub_model_name> when done.", default=False)
    hub_model_name: str | None = not_fingerprinted("Hub model repository name; default: hub.prefix.", default=None)


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
        """Keep the ``hub`` section too: the model can be pushed to the Hub."""
        super().__init__(config, pipeline_config)
        self.hub_config = getattr(pipeline_config, "hub", None)

    @property
    def preference(self) -> bool:
        """Whether this run trains on preference pairs (``objective: dpo``)."""
        return self.config.objective == "dpo"

    def reads_from(self) -> str | None:
        """The preferences stage's pairs for ``objective: dpo``, else the conversations of ``upstream``."""
        return "preferences" if self.preference else self.upstream

    @property
    def reinforced(self) -> bool:
        """Whether this run learns from sandbox rewards (``objective: grpo``)."""
        return self.config.objective == "grpo"

    def needed_columns(self) -> list[str]:
        """Pair columns for DPO; the conversation and its kept ``tests`` for GRPO; else ``id`` and ``messages``."""
        if self.preference:
            return ["id", *PAIR_COLUMNS]
        return [*super().needed_columns(), "tests"] if self.reinforced else super().needed_columns()

    def configured_input(self) -> str | None:
        """``conversations.dataset``, when the recipe trains on a dataset instead of the pipeline's own output."""
        return None if self.preference or self.reinforced else self.config.conversations.dataset

    def input_source(self, ctx, override: str | None):
        """The input (upstream, ``--input`` or the configured dataset) read as conversations, whatever its layout.

        Preference pairs, and conversations with their tests for GRPO, are read as they are.
        """
        inner = super().input_source(ctx, override)
        if override is not None and override == self.configured_input():
            inner.description = f"{override} (stages.{self.name}.conversations.dataset)"
        if self.preference or self.reinforced:
            return inner
        return ConversationSource(inner, self.config.conversations)

    def forward_batch(self) -> int:
        """Sequences per forward pass: DPO runs each pair's chosen and rejected answers together."""
        return self.config.per_device_batch_size * (2 if self.preference else 1)

    def with_reference(self, est: memory.Estimate) -> memory.Estimate:
        """Full-weight DPO also holds the frozen reference policy: a second copy of the weights."""
        if self.preference and self.config.adapter == "none":
            return dataclasses.replace(est, weights=2 * est.weights)
        return est

    # -- the model and its memory ------------------------------------------------
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

    def fit_estimate(self, model_dir: str, added_tokens: int, bf16: bool, cuda: bool) -> dict | None:
        """Estimate, log and check the memory need; None when the model's shape is unknown here."""
        shape = memory.lookup(model_dir) or memory.lookup(self.model_name())
        if shape is None:
            self.log.warning("finetune: no local config for %s: memory not estimated", model_dir)
            return None
        cfg = self.config
        if cfg.adapter != "none" or world_size() > 1:
            return layouts.fit_report(shape.with_extra_tokens(added_tokens), layouts.launched_layout(cfg.adapter),
                                      world_size(), check=cfg.fit_check, seq_len=cfg.max_length,
                                      batch=self.forward_batch(), bf16=bf16, lora_rank=cfg.lora_r,
                                      checkpointing=cfg.gradient_checkpointing, cuda=cuda)
        est = self.with_reference(memory.estimate(shape.with_extra_tokens(added_tokens), cfg.max_length,
                                                  self.forward_batch(), bf16=bf16, fused_attention=cuda, cuda=cuda))
        if cfg.optimizer == "adamw_torch":  # two full fp32 moments per parameter instead of Adafactor's factored state
            est = dataclasses.replace(est, optimizer_state=8 * est.n_params)
        for line in memory.format_estimate(est, cfg.gradient_checkpointing).splitlines():
            self.log.info(line)
        available, where = memory.available_memory()
        if cfg.fit_check:
            memory.check_fit(est, cfg.gradient_checkpointing, available, where)
        gib = memory.GIB
        return {"n_params": est.n_params, "needed_gib": round(est.total(cfg.gradient_checkpointing) / gib, 2),
                "available_gib": round(available / gib, 2), "device": where,
                "weights_gib": round(est.weights / gib, 2), "gradients_gib": round(est.gradients / gib, 2),
                "optimizer_gib": round((est.optimizer_state + est.optimizer_step) / gib, 2),
                "activations_gib": round(est.activations / gib, 2),
                "activations_checkpointed_gib": round(est.activations_checkpointed / gib, 2),
                "logits_gib": round(est.logits / gib, 2)}

    # -- preflight ---------------------------------------------------------------
    def preflight_checks(self, ctx) -> list:
        """The memory fit on the configured device (no weights loaded), and the Hub repository when pushing."""
        from pipeline.framework.preflight import FAIL, Check

        checks = [self.memory_check()]
        if self.config.push_to_hub:
            from pipeline.publishing.model import model_repo_id

            try:
                checks.append(Check(self.name, "model repository", model_repo_id(self.hub_config, self.config.hub_model_name),
                                    "stages.finetune.push_to_hub"))
            except PipelineError as exc:
                checks.append(Check(self.name, "model repository", "no hub.namespace", "stages.finetune.push_to_hub",
                                    FAIL, f"{self.name}: {exc}"))
        return checks

    def memory_check(self):
        """Full fine-tuning's estimated memory against ``device_memory_gib``, else this machine's device."""
        from pipeline.framework.preflight import FAIL, INFO, OK, WARN, Check
        from pipeline.llm.models import gguf_cache_path, is_gguf, resolve_model

        cfg = self.config
        name = self.model_name()
        try:
            source = resolve_model(name)
        except Exception as exc:  # the model's package is missing: the run would fail too
            return Check(self.name, "memory fit", "model not found", name, FAIL, f"{self.name}: {name}: {exc}")
        cached = gguf_cache_path(source, self.cache_dir(), "float32") if is_gguf(source) else None
        shape = memory.lookup(str(cached)) if cached and cached.is_dir() else memory.lookup(source)
        shape = shape or memory.lookup(name)
        if shape is None:
            return Check(self.name, "memory fit", f"not estimated: no local config for {name}", "", INFO)
        if cfg.device_memory_gib is not None:
            available, where, cuda = int(cfg.device_memory_gib * memory.GIB), "stages.finetune.device_memory_gib", True
        else:
            available, where = memory.available_memory()
            cuda = where.startswith("CUDA")
        bf16 = cfg.bf16 and cuda
        est = self.with_reference(memory.estimate(shape, cfg.max_length, self.forward_batch(), bf16=bf16,
                                                  fused_attention=cuda, cuda=cuda))
        need = est.total(cfg.gradient_checkpointing)
        gib = memory.GIB
        measured = (f"{need / gib:,.1f} GiB ({shape.name}, {'bfloat16' if bf16 else 'float32'}, "
                    f"batch {cfg.per_device_batch_size} x {cfg.max_length})")
        limit = f"{available / gib:,.1f} GiB ({where})"
        if need <= available:
            return Check(self.name, "memory fit", measured, limit, OK)
        problem = (f"{self.name}: full fine-tuning needs about {need / gib:,.1f} GiB > {where} {available / gib:,.1f} "
                   "GiB (lower stages.finetune.max_length or per_device_batch_size, or set device_memory_gib for "
                   "the training GPU)")
        return Check(self.name, "memory fit", measured, limit, FAIL if cfg.fit_check else WARN, problem)

    # -- data ------------------------------------------------------------------
    def encode_all(self, ctx, encoder: ConversationEncoder) -> list[tuple[dict, Encoded | EncodedPair]]:
        """Every input conversation (or preference pair) with its encoding."""
        cfg = self.config
        if self.preference:
            return [(row, encode_pair(encoder, row, cfg.max_length, cfg.overflow)) for row in ctx.source.iter_rows()]
        return [(row, encoder.encode(row["messages"], cfg.max_length, cfg.overflow)) for row in ctx.source.iter_rows()]

    def write_rows(self, store, encoded: list[tuple[dict, Encoded | EncodedPair]]) -> None:
        """One row per conversation: kept and truncated ones in the parts, dropped ones under dropped/."""
        store.reset_parts()
        for start in range(0, len(encoded), PART_ROWS):
            chunk = encoded[start : start + PART_ROWS]
            kept, dropped = [], []
            stats = {"train_tokens_per_epoch": 0, "label_tokens_per_epoch": 0, "truncated": 0}
            for row, enc in chunk:
                record = {"id": row["id"], "n_tokens": enc.n_tokens, "n_train_tokens": len(enc.input_ids),
                          "n_label_tokens": enc.n_label_tokens, "status": enc.status}
                if enc.kept:
                    kept.append(record)
                    stats["train_tokens_per_epoch"] += len(enc.input_ids)
                    stats["label_tokens_per_epoch"] += enc.n_label_tokens
                    stats["truncated"] += enc.status == "truncated"
                else:
                    dropped.append({**record, "drop_reason": enc.drop_reason})
            ids = [row["id"] for row, _ in chunk]
            store.write_batch(stable_id(*ids), kept, self.output_schema(), dropped, ids, stats,
                              keep_dropped=self.run_config.keep_dropped)

    def train_rows(self, examples: list[Encoded]) -> list[dict]:
        """Training rows: one per conversation, or packed."""
        if self.config.batching == "pack":
            return pack(examples, self.config.max_length)
        return plain_rows(examples)

    # -- training --------------------------------------------------------------
    def training_arguments(self, out_dir: Path, bf16: bool, cuda: bool):
        """transformers ``TrainingArguments`` (trl's ``DPOConfig`` for DPO) for the configured recipe.

        Gradient accumulation is shared among the processes.
        """
        from transformers import TrainingArguments

        from pipeline.training.distributed import accumulation_per_process
        from pipeline.training.preference import dpo_arguments_class, dpo_settings, require_trl
        from pipeline.training.rewards import grpo_settings

        cfg = self.config
        args_class, extra = TrainingArguments, {}
        if self.preference:
            args_class, extra = dpo_arguments_class(), dpo_settings(cfg.dpo, cfg.max_length)
        elif self.reinforced:
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
            seed=self.seed,
            data_seed=self.seed,
            report_to="none",
            dataloader_num_workers=0,
            disable_tqdm=False,
        )

    def load_encoder(self, model_dir: str) -> ConversationEncoder:
        """The model's tokenizer with the configured chat format installed."""
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
        except (OSError, ValueError) as exc:
            raise PipelineError(f"finetune: cannot load the tokenizer of {model_dir!r}: "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        cfg = self.config
        return ConversationEncoder(tokenizer, cfg.chat_format, cfg.system_prompt, cfg.use_default_system)

    def run(self, ctx) -> dict:
        """Encode the conversations, check the fit, train (resuming a crashed run), save and report."""
        import torch
        from transformers import Trainer

        from pipeline.training.adapters import attach_adapter, quantization_config
        from pipeline.training.distributed import check_layout_device, resume_checkpoint
        from pipeline.training.modeling import load_for_training, resolve_model_dir

        cfg = self.config
        store = ctx.store
        if cfg.push_to_hub:
            from pipeline.publishing.model import model_repo_id

            model_repo_id(self.hub_config, cfg.hub_model_name)  # fail now, not after hours of training
        model_dir = resolve_model_dir(self.model_name(), self.cache_dir())
        encoder = self.load_encoder(model_dir)
        encoded = self.encode_all(ctx, encoder)
        if is_main_process():
            self.write_rows(store, encoded)
            if self.run_config.keep_dropped and not (self.preference or self.reinforced):
                ctx.source.save_dropped(store.dir / "source_dropped")
        examples = [enc for _, enc in encoded if enc.kept]
        if not encoded:
            raise PipelineError("finetune: the input holds no conversations (the upstream stages kept none, "
                                "see --status for where rows were dropped); there is nothing to train on")
        if not examples:
            raise PipelineError(f"finetune: none of the {len(encoded)} input conversations can be trained on "
                                "(see finetune/dropped/ for the reasons)")
        cuda = torch.cuda.is_available()
        check_layout_device(layouts.launched_layout(cfg.adapter), cuda)
        bf16 = bool(cfg.bf16 and cuda and torch.cuda.is_bf16_supported())
        fit = self.fit_estimate(model_dir, encoder.added_tokens, bf16, cuda)

        tokenizer = encoder.tokenizer
        dtype = torch.bfloat16 if bf16 else torch.float32
        checkpoints = store.dir / "checkpoints"
        args = self.training_arguments(checkpoints, bf16, cuda)  # first: under ZeRO-3 the model then loads sharded
        model, forced = load_for_training(model_dir, dtype, cfg.dropout, len(tokenizer),
                                          quantization_config() if cfg.adapter == "qlora" else None)
        if forced:
            self.log.info("finetune: dropout forced to %s (was %s)", cfg.dropout, forced)
        if cfg.adapter != "none":
            model = attach_adapter(model, cfg, train_embeddings=encoder.added_tokens > 0,
                                   checkpointing=cfg.gradient_checkpointing)
        session = None
        if self.preference:
            from pipeline.training.preference import dpo_trainer

            trainer = dpo_trainer(model, args, [row for row, enc in encoded if enc.kept], tokenizer)
        elif self.reinforced:
            from pipeline.execution.verdicts import SandboxSession
            from pipeline.training.rewards import SandboxReward, grpo_trainer

            session = SandboxSession(cfg.grpo.sandbox, self.run_config.work_dir).open()
            trainer = grpo_trainer(model, args, [row for row, enc in encoded if enc.kept], tokenizer,
                                   SandboxReward(session, cfg.grpo.drop_stdin_main))
        else:
            trainer = Trainer(
                model=model, args=args,
                train_dataset=ConversationDataset(self.train_rows(examples)),
                data_collator=PaddingCollator(tokenizer.pad_token_id, 8 if cuda else None),
                processing_class=tokenizer,
            )
        last = resume_checkpoint(checkpoints)
        last = str(last) if last else None
        if last:
            self.log.info("finetune: resuming from %s", last)
        started = time.time()
        try:
            result = trainer.train(resume_from_checkpoint=last)
        finally:
            if session is not None:
                session.close()
        runtime = time.time() - started

        out, adapter_dir = self.save_model(trainer, encoder, store.dir, model_dir, dtype)
        if not is_main_process():
            return {}
        repo = None
        if cfg.push_to_hub:
            from pipeline.publishing.model import push_model

            repo = push_model(self.hub_config, out, cfg.hub_model_name)
        facts = {"objective": cfg.objective, "base_model": self.model_name(), "resolved_from": model_dir,
                 "chat_format": cfg.chat_format,
                 "resumed_from": last, "bf16": bf16, "device": "cuda" if cuda else "cpu", "dropout_forced": forced,
                 "added_tokens": encoder.added_tokens, "fit_estimate": fit, "hub_repo": repo,
                 "examples_per_epoch": len(examples), "rows_per_epoch": len(trainer.train_dataset),
                 "adapter": cfg.adapter, "adapter_dir": str(adapter_dir) if adapter_dir else None,
                 "processes": world_size(), "gradient_accumulation_per_process": args.gradient_accumulation_steps,
                 "effective_batch": args.per_device_train_batch_size * args.gradient_accumulation_steps * world_size()}
        if self.preference:
            facts["dpo"] = {**self.config.dpo.model_dump(), **preference_metrics(trainer.state.log_history)}
        if self.reinforced:
            facts["grpo"] = {**self.config.grpo.model_dump(exclude={"sandbox"}),
                             **reward_metrics(trainer.state.log_history)}
        fields = self.report(ctx, trainer.state, float(result.training_loss), runtime, out, facts)
        if not (self.preference or self.reinforced):
            fields["conversations"] = ctx.source.report()
        return fields

    def report(self, ctx, state, mean_loss: float, runtime: float, model_dir: Path, facts: dict) -> dict:
        """Write the loss log and curve; return the manifest fields: counts, training metrics, where the model is."""
        from pipeline.training.plot import loss_points, plot_loss

        store = ctx.store
        history = state.log_history
        (store.dir / "train_log.json").write_text(json.dumps(history, indent=1) + "\n")
        png = plot_loss(history, store.dir / "loss.png", f"{ctx.pipeline_config.name}: finetune")
        _, losses = loss_points(history)
        fields = manifest_fields(store.commit_log())
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

    def save_model(self, trainer, encoder: ConversationEncoder, folder: Path, base_dir: str, dtype):
        """Save model, tokenizer and chat template together (atomically replacing any earlier save).

        With an adapter, the adapter goes to ``adapter/`` and the base with the adapter merged in to ``model/``.
        Returns ``(model folder, adapter folder or None)``.
        """
        from pipeline.training.adapters import merge_adapter
        from pipeline.training.distributed import save_plain, save_with_trainer

        tokenizer, stops = encoder.tokenizer, encoder.stop_token_ids

        def for_generation(model):
            model.config.use_cache = True
            model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
            model.generation_config.pad_token_id = tokenizer.pad_token_id
            return model

        if self.config.adapter == "none":
            for_generation(trainer.model)
            return save_with_trainer(trainer, tokenizer, folder / "model"), None
        adapter_dir = save_with_trainer(trainer, tokenizer, folder / "adapter")
        if is_main_process():
            merged = merge_adapter(base_dir, adapter_dir, dtype, self.config.dropout, len(tokenizer))
            save_plain(for_generation(merged), tokenizer, folder / "model")
            self.log.info("finetune: adapter saved in %s, merged model in %s", adapter_dir, folder / "model")
        return folder / "model", adapter_dir
