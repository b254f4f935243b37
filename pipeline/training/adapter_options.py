"""The finetune stage's adapter settings (LoRA / QLoRA through PEFT); see :mod:`pipeline.training.adapters`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.framework.config import StageConfig


class AdapterOptions(StageConfig):
    """The finetune settings of the adapter (none: full fine-tuning, as in the paper)."""

    adapter: Literal["none", "lora", "qlora"] = Field(
        default="none",
        description="'none': full fine-tuning (the paper); 'lora': train low-rank adapters only (PEFT); "
                    "'qlora': the same on a 4-bit base (needs CUDA and bitsandbytes).")
    lora_r: int = Field(default=16, ge=1, description="LoRA rank.")
    lora_alpha: float = Field(default=32, gt=0, description="LoRA scale numerator (updates are scaled by alpha / r).")
    lora_dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the LoRA branch's input.")
    lora_target_modules: str | list[str] = Field(
        default="all-linear",
        description="Modules that get adapters: 'all-linear' (every linear layer but the output layer) or a "
                    "list of module names (e.g. [q_proj, k_proj, v_proj, o_proj]).")
