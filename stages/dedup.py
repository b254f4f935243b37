"""dedup: from the executed samples to the fine-tuning set.

The executed samples go through the dedup filters in order, each drop
counted under its reason in the manifest: only samples whose tests passed,
well-formed answers without placeholders, the published sanitize filters,
no benchmark contamination, one passing response per instruction, no exact
or near duplicate (MinHash over the instruction, the response and its code),
no second sample defining the same names. Each filter is declared once in
:mod:`pipeline.dedup.filters`; the list below comes from there.

Every choice of which row survives goes by ``sha256(run seed, row id)``, so
the output does not depend on input order. Each output row carries the
instruction, the response, the tests, the ids back to its seed, and
``messages``: a user turn (the instruction) and an assistant turn (the
response, with its tests section unless ``answer_includes_tests`` is off),
ready for fine-tuning. Answers rescued by the repair stage compete like any
other passing answer; ``round`` says which round wrote the one kept.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
from pydantic import Field

from pipeline.decontamination.sources import DecontaminationSettings
from pipeline.dedup.filters import DEDUP_FILTERS
from pipeline.dedup.near_dedup import NearDedupSettings
from pipeline.dedup.sanitize import SanitizeSettings
from pipeline.execution.samples import SAMPLE_COLUMNS
from pipeline.framework.config import StageConfig
from pipeline.framework.filters import FilterContext
from pipeline.framework.ids import seeded_rank
from pipeline.framework.progress import progress
from pipeline.framework.stage import WholeStage
from pipeline.framework.store import PartWriter
from pipeline.training.conversation import MESSAGES, assistant_answer, turn

AUDITED = ("id", "seed_id", "instruction_id", "instruction", "response", "tests")


NearDedupField = Literal["instruction", "response", "code"]


class DedupConfig(StageConfig, DecontaminationSettings):
    """Settings of the dedup stage."""

    near_dedup: NearDedupSettings = Field(default_factory=lambda: NearDedupSettings(num_perm=250))
    near_dedup_passes: list[NearDedupField] = Field(
        default_factory=lambda: ["instruction", "response", "code"],
        description="Near-dedup passes, in order, each over one field (as published: the instruction, the "
        "response, the response's code); [] switches near-dedup off.",
    )
    sanitize: SanitizeSettings = Field(default_factory=SanitizeSettings)
    answer_includes_tests: bool = Field(
        default=True, description="The assistant turn ends with the tests section, as the response was sampled."
    )


class DedupStage(WholeStage):
    """Select one passing, well-formed, unique, uncontaminated response per instruction."""

    name = "dedup"
    title = "Passing responses: one per instruction, exact and MinHash near-dedup, decontaminated"
    upstream = "repair"  # the executed samples, and the repair rounds' attempts when there are any
    Config = DedupConfig
    filter_registry = DEDUP_FILTERS
    input_columns = {
        "id": "sample id", "seed_id": "seed id", "instruction_id": "instruction id", "instruction": "the instruction",
        "response": "the response", "tests": "its tests", "passed": "whether its tests passed",
    }
    output_columns = {
        **SAMPLE_COLUMNS,
        "tests": (pa.string(), "its tests, which passed"),
        "messages": (MESSAGES, "a user turn and an assistant turn, for fine-tuning"),
        "round": (pa.int32(), "0: sampled by the responses stage; r: written in repair round r"),
    }

    def run(self, ctx) -> dict:
        """Read every executed sample, in seeded order; run the filters; write the kept rows and the dropped ones."""
        ctx.store.reset_parts()  # a whole-input stage redoes everything: it is quick next to what came before
        rows = sorted(ctx.source.iter_rows(), key=lambda r: seeded_rank(self.seed, r["id"]))
        filter_ctx = FilterContext(self.config, self.seed, self.run_config.workers)
        with progress(total=len(DEDUP_FILTERS.names), desc="dedup filters", unit="filters") as bar:
            _, dropped = DEDUP_FILTERS.apply(DEDUP_FILTERS.names, rows, filter_ctx, progress=lambda _: bar.update(1))
        reason = {row["id"]: why for row, why in dropped}
        writer = PartWriter(ctx.store, self.output_schema(), self.run_config.keep_dropped)
        for row in rows:
            if row["id"] in reason:
                writer.add([row["id"]], dropped=[{k: row.get(k) for k in AUDITED} | {"drop_reason": reason[row["id"]]}])
            else:
                writer.add([row["id"]], [self.output_row(row)])
        return writer.close()

    def output_row(self, row: dict) -> dict:
        """A kept row with its conversation."""
        answer = assistant_answer(row["response"], row["tests"], self.config.answer_includes_tests)
        return {
            "id": row["id"], "seed_id": row["seed_id"], "instruction_id": row["instruction_id"],
            "instruction": row["instruction"], "response": row["response"], "tests": row["tests"],
            "messages": [turn("user", row["instruction"]), turn("assistant", answer)],
            "round": row.get("round") or 0,
        }
