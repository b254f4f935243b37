"""The finetune stage's settings: the paper's recipe by default (Adafactor, lr 1e-5, 4 epochs, effective batch 64,
5% warm-up, linear decay, 1280 tokens, dropout 0), the chat format, the objective (SFT, DPO, GRPO), adapters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.conversations import ConversationsConfig
from pipeline.framework.config import not_fingerprinted
from pipeline.training.adapter_options import AdapterOptions
from pipeline.training.preference import DpoOptions
from pipeline.training.rewards import GrpoOptions


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

    @property
    def preference(self) -> bool:
        """Whether this run trains on preference pairs (``objective: dpo``)."""
        return self.objective == "dpo"

    @property
    def reinforced(self) -> bool:
        """Whether this run learns from sandbox rewards (``objective: grpo``)."""
        return self.objective == "grpo"

    def forward_batch(self) -> int:
        """Sequences per forward pass: DPO runs each pair's chosen and rejected answers together."""
        return self.per_device_batch_size * (2 if self.preference else 1)
