"""Preference training (DPO) for the finetune stage: the settings, pair encoding and trl's trainer.

The pairs come in trl's conversational layout (``prompt``: the conversation
up to the answer, ``chosen`` / ``rejected``: one assistant turn each). They are
rendered with the same chat format as supervised fine-tuning: the format's
Jinja template is installed on the tokenizer that trl tokenises with, so the
prompt, system preamble and end markers are the very tokens SFT trains on,
and, as in SFT, only answer tokens count (trl masks the prompt out of both
log-probabilities). Each pair is first encoded with our own
:class:`~pipeline.training.data.ConversationEncoder` to count its tokens and
apply ``max_length`` / ``overflow`` exactly as SFT does.

The reference policy is the model the run starts from (the base, or an SFT
model given as ``base_model``), frozen; with a LoRA adapter it is the same
model with the adapter switched off, so no second copy is held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from pipeline.framework.config import StrictModel
from pipeline.framework.errors import PipelineError
from pipeline.training.data import ConversationEncoder, Encoded, TrainingOutcome

PAIR_COLUMNS = ("prompt", "chosen", "rejected")


class DpoOptions(StrictModel):
    """Settings of preference training (``objective: dpo``)."""

    beta: float = Field(default=0.1, gt=0, description="Strength of the pull towards the reference policy "
                                                       "(DPO's beta; larger stays closer to it).")
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = Field(
        default="sigmoid", description="DPO loss: 'sigmoid' (the DPO paper), 'ipo', 'hinge' or 'robust' (trl's).")
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5,
                                   description="Assumed share of wrongly ordered pairs (conservative DPO, robust).")


@dataclass
class EncodedPair(TrainingOutcome):
    """One preference pair's encodings: what it costs and whether it is trained on."""

    chosen: Encoded
    rejected: Encoded

    @property
    def status(self) -> str:
        """``kept``, ``truncated`` (either side was cut) or the first side's ``dropped_<reason>``."""
        for side in (self.chosen, self.rejected):
            if not side.kept:
                return side.status
        truncated = "truncated" in (self.chosen.status, self.rejected.status)
        return "truncated" if truncated else "kept"

    @property
    def n_tokens(self) -> int:
        """Tokens of both rendered conversations, before truncation."""
        return self.chosen.n_tokens + self.rejected.n_tokens

    @property
    def input_ids(self) -> list[int]:
        """Both sides' trained tokens, one after the other (their count is what one epoch forwards)."""
        return self.chosen.input_ids + self.rejected.input_ids

    @property
    def n_label_tokens(self) -> int:
        """Answer tokens of both sides."""
        return self.chosen.n_label_tokens + self.rejected.n_label_tokens


def check_pair(row: dict) -> None:
    """A one-line error naming the row when a pair is not in the conversational layout."""
    for key in PAIR_COLUMNS:
        turns = row.get(key)
        if not isinstance(turns, list) or not turns:
            raise PipelineError(f"finetune (objective dpo): row {row.get('id')!r}: {key!r} must be a non-empty "
                                "list of {role, content} turns (the preferences stage's layout)")
    for key in ("chosen", "rejected"):
        if row[key][-1].get("role") != "assistant":
            raise PipelineError(f"finetune (objective dpo): row {row.get('id')!r}: {key!r} must end with an "
                                "assistant turn")


def encode_pair(encoder: ConversationEncoder, row: dict, max_length: int, overflow) -> EncodedPair:
    """Encode prompt + chosen and prompt + rejected as SFT would (same format, labels, truncation)."""
    check_pair(row)
    prompt = list(row["prompt"])
    return EncodedPair(encoder.encode(prompt + list(row["chosen"]), max_length, overflow),
                       encoder.encode(prompt + list(row["rejected"]), max_length, overflow))


def dpo_trainer(model, args, pairs: list[dict], tokenizer):
    """trl's ``DPOTrainer`` over ``pairs`` (prompt, chosen, rejected), tokenised with the installed chat format."""
    import datasets

    data = datasets.Dataset.from_list([{k: row[k] for k in PAIR_COLUMNS} for row in pairs])
    return require_trl("dpo").DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)


def require_trl(objective: str):
    """The ``trl`` module, or a one-line error naming the extra to install."""
    try:
        import trl
    except ImportError:
        raise PipelineError(f"finetune: objective {objective} needs trl: pip install '.[preference]'") from None
    return trl


def dpo_arguments_class():
    """trl's ``DPOConfig`` (a ``TrainingArguments``), or a one-line error when trl is missing."""
    return require_trl("dpo").DPOConfig


def dpo_settings(options: DpoOptions, max_length: int) -> dict:
    """The ``DPOConfig`` fields that differ from supervised training's arguments."""
    return {"beta": options.beta, "loss_type": [options.loss_type], "label_smoothing": options.label_smoothing,
            "max_length": max_length, "truncation_mode": "keep_start",
            "disable_dropout": False}  # the stage has already set every dropout to its `dropout` setting


def preference_metrics(log_history: list[dict]) -> dict:
    """The last logged reward accuracy and margin (share of pairs the policy prefers rightly, and by how much)."""
    last = {}
    for entry in log_history:
        for key in ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected"):
            if key in entry:
                last[key.replace("rewards/", "final_reward_")] = round(float(entry[key]), 4)
    return last
