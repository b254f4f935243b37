"""The two shapes a stage can take, and what every stage declares about itself.

* :class:`MapStage`: a function over batches of input rows returning kept rows,
  dropped rows with reasons and counters. The framework owns everything
  around it (reading upstream, skipping finished ids, batching, progress,
  atomic writes, counts, the manifest, the executor).
* :class:`WholeStage`: a stage that needs its whole input at once (dedup,
  finetune, evaluate) implements ``run`` over the store instead.

A stage names its upstream stage but never imports it: it reads upstream
rows only through the store.
"""

from __future__ import annotations

import inspect
import logging
import sys
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import pyarrow as pa

from pipeline.framework.config import StageConfig

if TYPE_CHECKING:
    from pipeline.framework.context import StageContext
    from pipeline.framework.filters import FilterRegistry
    from pipeline.framework.inputs import InputSource
    from pipeline.framework.preflight import Check, PreflightContext, RowEstimate
    from pipeline.framework.store import StageStore


@dataclass
class BatchResult:
    """What one batch produced: kept rows, dropped rows (each with ``drop_reason``) and counters."""

    rows: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)
    stats: Counter = field(default_factory=Counter)

    def keep(self, row: dict) -> None:
        """Add a kept row."""
        self.rows.append(row)

    def drop(self, row: dict, reason: str) -> None:
        """Add a dropped row with the name of the filter that dropped it."""
        self.dropped.append({**row, "drop_reason": reason})

    def count(self, name: str, n: int = 1) -> None:
        """Add to a stage-specific counter reported in the manifest."""
        self.stats[name] += n


class Stage(ABC):
    """Base of every stage. Subclasses set the class attributes below."""

    name: ClassVar[str]
    title: ClassVar[str]
    """One line saying what the stage does (shown in --help and dataset cards)."""
    upstream: ClassVar[str | None] = None
    """The stage whose output this one reads, or None for a source stage."""
    Config: ClassVar[type[StageConfig]] = StageConfig
    input_columns: ClassVar[dict[str, str]] = {}
    """Columns read from each input row, with what they mean."""
    output_columns: ClassVar[dict[str, tuple[pa.DataType, str]]] = {}
    """Columns written to each output row: Arrow type and meaning."""
    timing_columns: ClassVar[tuple[str, ...]] = ()
    """Output columns that measure the run (wall-clock seconds), not the data: left out of the output digest."""
    version: ClassVar[str] = "1"
    """Bump when the stage's logic changes what it outputs: finished runs then go stale."""
    uses_model: ClassVar[bool] = False
    """Whether the top-level ``model`` section is part of this stage's fingerprint."""
    unfingerprinted: ClassVar[tuple[str, ...]] = ()
    """Dotted config paths (inside the stage's section) that do not change its output."""
    multi_process: ClassVar[bool] = False
    """Whether the stage runs under a multi-process launch (every process runs it; only the main one writes)."""
    filter_registry: ClassVar["FilterRegistry | None"] = None
    """The stage's named filters, each declared once (the docs list them), if it has any."""

    def __init__(self, config: StageConfig, pipeline_config: Any):
        self.config = config
        # Keep only the sections a stage may use, so a stage pickles to pool workers.
        self.run_config = pipeline_config.run
        self.model_config = getattr(pipeline_config, "model", None)

    @classmethod
    def description(cls) -> str:
        """What the stage does, for the docs and dataset cards: its module's docstring, then its filters."""
        module = sys.modules.get(cls.__module__)
        text = inspect.cleandoc(module.__doc__ or cls.title) if module else cls.title
        if cls.filter_registry is not None:
            heading = "Its filters, in their declared order (the default chain keeps it):"
            text += "\n\n" + "\n".join([heading, "", *cls.filter_registry.markdown()])
        return text

    @classmethod
    def output_schema(cls) -> pa.Schema:
        """The Arrow schema of the stage's kept rows."""
        return pa.schema([pa.field(name, dtype) for name, (dtype, _) in cls.output_columns.items()])

    @property
    def seed(self) -> int:
        """The run seed."""
        return self.run_config.seed

    def fingerprint_files(self) -> list[Path]:
        """Files whose content is part of the fingerprint (prompt banks, for example)."""
        return []

    def rerun_reason(self, manifest: dict) -> str | None:
        """Why a finished run must run again though nothing it depends on changed (rows to retry), or None.

        For outputs that record a passing fault rather than a result (a sandbox that failed): the runner then
        treats the stage as stale, so the same command retries it.
        """
        return None

    def reads_from(self) -> str | None:
        """The stage whose output this run reads: ``upstream``, unless the stage's config picks another."""
        return self.upstream

    def needed_columns(self) -> list[str]:
        """Columns every input row must have for this run: those of ``input_columns``, unless the config changes them."""
        return list(self.input_columns)

    def configured_input(self) -> str | None:
        """An input the stage's own config names in place of its upstream (read as ``--input`` is); None: none."""
        return None

    def input_source(self, ctx: "StageContext", override: str | None) -> "InputSource":
        """Where the stage's input rows come from: ``--input`` if given, else the upstream store."""
        from pipeline.framework.inputs import StoreSource, open_input

        if override is not None:
            return open_input(override)
        return StoreSource(ctx.upstream_store())

    def preflight_checks(self, ctx: "PreflightContext") -> list["Check"]:
        """Checks ``--preflight`` runs for this stage before any work (prompt sizes, sandbox, memory); none here."""
        return []

    # -- --show-prompt ---------------------------------------------------------
    def show_prompt(self, row: dict) -> str | list[dict] | None:
        """The prompt the stage renders for ``row`` (completion text, or chat messages); None: it prompts no model."""
        return None

    def prompt_rows(self, ctx: "StageContext") -> Iterator[dict]:
        """The rows ``--show-prompt`` picks from: the stage's input rows (its upstream's output, or ``--input``)."""
        return ctx.source.iter_rows()

    def stand_in_rows(self) -> list[dict]:
        """Rows that stand in when the work dir holds none yet (a few-shot bank's examples, say); none here."""
        return []

    def preflight_rows(self, rows_in: "RowEstimate") -> "RowEstimate":
        """How many rows the stage writes for ``rows_in`` input rows, for budgets; default: at most as many."""
        return rows_in

    @property
    def log(self) -> logging.Logger:
        """The stage's logger (writes to the console and the run's log file)."""
        return logging.getLogger(f"pipeline.{self.name}")


class MapStage(Stage):
    """A stage that maps batches of input rows to output rows, one batch at a time."""

    parallel: ClassVar[bool] = False
    """True when batches are CPU-bound and independent, so a process pool may run them."""

    @property
    def ray_layout(self) -> str:
        """How the Ray executor places the stage: tasks, per_gpu, per_node or single (see executors.ray_executor)."""
        return "tasks" if self.parallel else "single"

    def setup(self) -> None:
        """Prepare per-process resources (models, indexes) before the first batch."""

    def teardown(self) -> None:
        """Release what :meth:`setup` acquired."""

    @abstractmethod
    def process_batch(self, rows: list[dict]) -> BatchResult:
        """Turn a batch of input rows into kept rows, dropped rows and counters."""

    def output_limit(self) -> int | None:
        """Stop once this many rows are kept (the first ones in input order); None for no limit."""
        return None

    def whole_output_drops(self, store: "StageStore") -> dict[str, str]:
        """Rows to drop once every batch is committed, ``{row id: reason}``.

        For filters that compare rows across batches (near-dedup). The
        framework saves the plan, then applies it crash-safely and counts it.
        """
        return {}


class WholeStage(Stage):
    """A stage that needs its whole input at once."""

    @abstractmethod
    def run(self, ctx: "StageContext") -> dict:
        """Do the stage's work and return the manifest fields it owns (rows_in, rows_out, dropped, stats)."""


@dataclass(frozen=True)
class PlannedStage:
    """A stage of the method that is listed in the pipeline but not built yet.

    It shows in ``--help`` and ``--status``; asking it to run fails with a
    message naming the issue that tracks it, instead of pretending.
    """

    name: str
    title: str
    upstream: str | None
    issue: int
