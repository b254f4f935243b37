"""preferences: the model's passing and failing answers to the same instruction, as preference pairs.

The execute stage knows, for each instruction, which sampled answers passed
their tests and which did not. Every instruction with at least one passing
sample and at least one rejected one (verdict ``failed``, ``timeout`` or
``oom`` by default; a sandbox ``error`` judges the sandbox, not the answer)
gives up to ``pairs_per_instruction`` pairs: a passing answer as ``chosen``,
a failing one as ``rejected``. Which samples are paired goes by
``sha256(run seed, sample id)``, so the pairs never depend on input order.

Rows are in the conversational preference layout trl's ``DPOTrainer`` reads:
``prompt`` (the instruction as a user turn), ``chosen`` and ``rejected`` (one
assistant turn each: the response, then its tests unless
``answer_includes_tests`` is off, as the dedup stage writes them), with both
verdicts, both sample ids and the rejected sample's error tail. Samples not
used in any pair are kept under ``dropped/`` with the reason:
``no_passing_sample``, ``no_failing_sample``, ``status_<verdict>`` or
``pair_limit``. The finetune stage trains on these pairs with
``objective: dpo``.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from pipeline.execution.samples import group_by_instruction
from pipeline.framework.config import StageConfig
from pipeline.framework.progress import progress
from pipeline.framework.stage import WholeStage
from pipeline.framework.store import PartWriter
from pipeline.training.conversation import MESSAGES
from pipeline.training.pairs import DEFAULT_REJECTED, pair_instruction

CARRIED = ("id", "seed_id", "instruction_id", "instruction", "response", "tests", "status")


class PreferencesConfig(StageConfig):
    """Settings of the preferences stage."""

    pairs_per_instruction: int = Field(
        default=1, ge=1, description="Pairs per instruction at most (each passing and failing sample used once "
                                     "before any is reused; no pair repeats).")
    rejected_statuses: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REJECTED),
        description="Verdicts that make a sample a rejected answer (of passed, failed, timeout, oom, error).")
    answer_includes_tests: bool = Field(
        default=True, description="The chosen and rejected turns end with the tests section, as sampled.")


class PreferencesStage(WholeStage):
    """Pair passing with failing answers to the same instruction."""

    name = "preferences"
    title = "Preference pairs: a passing answer chosen over a failing one to the same instruction"
    upstream = "repair"  # the executed samples, and the repair rounds' attempts when there are any
    Config = PreferencesConfig
    input_columns = {
        "id": "sample id", "instruction_id": "instruction id", "instruction": "the instruction",
        "response": "the response", "tests": "its tests", "passed": "whether its tests passed",
        "status": "its verdict",
    }
    output_columns = {
        "id": (pa.string(), "the pair id (from both sample ids)"),
        "seed_id": (pa.string(), "the seed the instruction comes from"),
        "instruction_id": (pa.string(), "the instruction answered"),
        "prompt": (MESSAGES, "the instruction as a user turn"),
        "chosen": (MESSAGES, "the passing answer as an assistant turn"),
        "rejected": (MESSAGES, "the failing answer as an assistant turn"),
        "chosen_id": (pa.string(), "the passing sample's id"),
        "rejected_id": (pa.string(), "the failing sample's id"),
        "chosen_status": (pa.string(), "the chosen sample's verdict (passed)"),
        "rejected_status": (pa.string(), "the rejected sample's verdict"),
        "rejected_error": (pa.string(), "the tail of what the rejected program printed (stderr, else stdout)"),
    }

    def run(self, ctx) -> dict:
        """Group the executed samples by instruction, pair them, write the pairs and the samples left out."""
        cfg = self.config
        ctx.store.reset_parts()  # a whole-input stage redoes everything: it is quick next to what came before
        writer = PartWriter(ctx.store, self.output_schema(), self.run_config.keep_dropped)
        groups = group_by_instruction(ctx.source.iter_rows())
        bar = progress(total=len(groups), desc="preference pairs", unit="instructions", iterable=groups.values())
        for samples in bar:
            pairing = pair_instruction(samples, self.seed, cfg.pairs_per_instruction, cfg.rejected_statuses,
                                       cfg.answer_includes_tests)
            left_out = [{k: r.get(k) for k in CARRIED} | {"drop_reason": pairing.left_out[r["id"]]}
                        for r in samples if r["id"] in pairing.left_out]
            writer.add([r["id"] for r in samples], pairing.pairs, left_out,
                       {"instructions": 1, "instructions_paired": int(bool(pairing.pairs))})
        return writer.close()
