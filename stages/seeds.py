"""seeds: collect seed functions from a code corpus.

Every top-level Python function whose body opens with a docstring is a
candidate seed. Files that do not parse are counted and skipped. Candidates
then pass a chain of filters, in the order the config lists them, and the
first filter a function fails is its drop reason. As published, a seed
returns a value, carries no TODO, FIXME or "bug", uses none of os, sys,
subprocess and the like, has at most 150 lines and at least one argument,
is not taken from a benchmark, stands alone and type-checks clean; one seed
is kept per cluster of near-duplicates, and the model may judge whether its
docstring describes the code. Each filter is declared once in
:mod:`pipeline.analysis.seed_filters`; the list below comes from there.

Counts add up: ``functions_found = rows_out + the sum of the function-level drops``
and ``rows_in = files_parsed + unparseable_file``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import Field, field_validator

from pipeline.analysis.code_files import SourceConfig, corpus_source
from pipeline.analysis.pysource import UnparsableSource, extract_functions
from pipeline.analysis.seed_filters import SEED_FILTERS, Candidate
from pipeline.decontamination.sources import DecontaminationSettings
from pipeline.dedup.near_dedup import NearDedupSettings
from pipeline.framework.config import StageConfig
from pipeline.framework.filters import FilterContext
from pipeline.framework.ids import stable_id
from pipeline.framework.inputs import InputSource
from pipeline.framework.preflight import Check, PreflightContext, RowEstimate
from pipeline.framework.stage import BatchResult, MapStage
from pipeline.generation.docstring_judge import JudgeSettings, judge_bank_rows, judge_preflight, judge_prompt

BANNED = ["os", "sys", "subprocess", "argparse", "setuptools", "distutils", "matplotlib", "seaborn"]


class SeedsConfig(StageConfig, DecontaminationSettings):
    """Settings of the seeds stage."""

    source: SourceConfig = Field(default_factory=SourceConfig)
    filters: list[SEED_FILTERS.name_type()] = Field(  # type: ignore[valid-type]
        default_factory=SEED_FILTERS.defaults, description=SEED_FILTERS.describe_chain())
    banned_imports: list[str] = Field(default_factory=lambda: list(BANNED), description="Modules a seed may not use.")
    todo_match: Literal["substring", "word"] = Field(
        default="substring",
        description="How no_todo looks for todo/fixme/bug: substring (as published; 'debug' and 'todos' drop too) "
        "or word (whole words only).",
    )
    typecheck_unit: Literal["function", "file"] = Field(
        default="function",
        description="What typechecks checks: each function alone with its file's imports (as published) or the "
        "function inside its whole file.",
    )
    max_lines: int = Field(default=150, gt=0, description="Longest seed function, in lines.")
    min_args: int = Field(default=1, ge=0, description="Fewest arguments a seed function takes.")
    max_seeds: int | None = Field(
        default=None, gt=0,
        description="Stop after this many seeds (the first in input order), counted before near_dedup.",
    )
    near_dedup: NearDedupSettings = Field(default_factory=lambda: NearDedupSettings(threshold=0.5))
    docstring_judge: JudgeSettings = Field(default_factory=JudgeSettings)

    def problems(self, pipeline_config) -> list[str]:
        """The docstring judge asks the model: it needs the top-level model section."""
        if "docstring_judge" in self.filters and getattr(pipeline_config, "model", None) is None:
            return ["filters: docstring_judge asks the model, so the config needs a model section "
                    "(model.backend, model.model)"]
        return []

    @field_validator("filters")
    @classmethod
    def _whole_output_filters_last(cls, value: list[str]) -> list[str]:
        return SEED_FILTERS.check_chain(value)


class SeedsStage(MapStage):
    """Extract seed functions from code files and filter them."""

    name = "seeds"
    title = "Seed functions with docstrings, extracted from a code corpus and filtered"
    upstream = None
    Config = SeedsConfig
    filter_registry = SEED_FILTERS
    parallel = True
    input_columns = {"path": "file path inside the corpus", "content": "the file's Python source"}
    output_columns = {
        "id": (pa.string(), "seed id: hash of the file id, line and source"),
        "file_id": (pa.string(), "id of the file the seed came from"),
        "path": (pa.string(), "path of that file in the corpus"),
        "name": (pa.string(), "function name"),
        "code": (pa.string(), "the function's source, decorators included"),
        "docstring": (pa.string(), "the function's docstring"),
        "lineno": (pa.int32(), "first line of the function in its file"),
        "num_lines": (pa.int32(), "lines of source"),
        "num_args": (pa.int32(), "number of arguments"),
    }

    def __init__(self, config: SeedsConfig, pipeline_config):
        super().__init__(config, pipeline_config)
        self.filter_context = FilterContext(config, self.seed, self.run_config.workers, self.model_config)

    def fingerprint_files(self) -> list[Path]:
        """The judge's bank, when the judge is on."""
        return [Path(self.config.docstring_judge.fewshot_file)] if "docstring_judge" in self.config.filters else []

    @property
    def uses_model(self) -> bool:  # type: ignore[override]
        """The model is part of the fingerprint only when the docstring judge is on."""
        return "docstring_judge" in self.config.filters

    def input_source(self, ctx, override: str | None) -> InputSource:
        """The configured corpus, or ``--input`` (a folder of .py files, or Parquet/JSONL of files)."""
        return corpus_source(self.config.source, override)

    def output_limit(self) -> int | None:
        """``max_seeds``: the first seeds in input order, counted before the whole-output filters."""
        return self.config.max_seeds

    # -- the step ------------------------------------------------------------
    def process_batch(self, rows: list[dict]) -> BatchResult:
        """Extract the candidate functions of a batch of files and run them through the per-batch filters."""
        result = BatchResult()
        candidates: list[Candidate] = []
        for file in rows:
            try:
                functions = extract_functions(file["content"])
            except UnparsableSource:
                result.drop({"id": file["id"], "path": file["path"]}, "unparseable_file")
                continue
            result.count("files_parsed")
            result.count("functions_found", len(functions))
            candidates.extend((file, fn) for fn in functions)
        kept, dropped = SEED_FILTERS.apply(self.config.filters, candidates, self.filter_context, whole_output=False)
        for candidate, reason in dropped:
            result.drop(seed_row(candidate), reason)
        for candidate in kept:
            result.keep(seed_row(candidate))
        return result

    def whole_output_drops(self, store) -> dict[str, str]:
        """The whole-output filters (near_dedup, docstring_judge), in their chain order, over every batch's seeds."""
        if not any(name in SEED_FILTERS.whole_output() for name in self.config.filters):
            return {}
        seeds = store.read_table(["id", "code"]).to_pylist()
        _, dropped = SEED_FILTERS.apply(self.config.filters, seeds, self.filter_context, whole_output=True)
        return {row["id"]: reason for row, reason in dropped}

    # -- --show-prompt: the docstring judge's question about a seed --------------
    def show_prompt(self, row: dict):
        """The docstring judge's prompt for a seed (a row with ``id`` and ``code``)."""
        return judge_prompt(self.config.docstring_judge, self.seed, row)

    def prompt_rows(self, ctx):
        """The seeds in the work dir: the judge asks about the stage's own output."""
        return ctx.store.iter_rows(["id", "code"])

    def stand_in_rows(self) -> list[dict]:
        """The judge's bank functions, standing in before any seed exists."""
        return judge_bank_rows(self.config.docstring_judge)

    # -- preflight -------------------------------------------------------------
    def preflight_rows(self, rows_in: RowEstimate) -> RowEstimate:
        """At most ``max_seeds`` seeds; unknown without it (the corpus is not scanned before the run)."""
        if self.config.max_seeds is None:
            return RowEstimate(None, "unknown without stages.seeds.max_seeds", 1.0, self.name)
        return RowEstimate(self.config.max_seeds, f"stages.seeds.max_seeds {self.config.max_seeds:,}", 1.0, self.name)

    def preflight_checks(self, ctx: PreflightContext) -> list[Check]:
        """The docstring judge's prompt size and budget, when the judge is on."""
        if "docstring_judge" not in self.config.filters:
            return []
        rows = ctx.sample_rows(self.name, ["id", "code"], 64)
        return judge_preflight(ctx, self.name, self.model_config, self.config.docstring_judge, self.seed, rows,
                               f"{len(rows)} longest seeds in the work dir", ctx.rows_out(self.name))


def seed_row(candidate: Candidate) -> dict:
    """The output row of a candidate seed."""
    file, fn = candidate
    return {
        "id": stable_id(file["id"], fn.lineno, fn.code),
        "file_id": file["id"],
        "path": file["path"],
        "name": fn.name,
        "code": fn.code,
        "docstring": fn.docstring,
        "lineno": fn.lineno,
        "num_lines": fn.num_lines,
        "num_args": fn.num_args,
    }
