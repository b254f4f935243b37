"""seeds: collect seed functions from a code corpus.

Every top-level Python function whose body opens with a docstring is a
candidate seed. Files that do not parse are counted and skipped. Candidates
then pass a chain of filters, in the order the config lists them, and the
first filter a function fails is its drop reason:

* ``returns_value``: the function returns a value (a ``return <expr>`` other than ``None``);
* ``no_todo``: no TODO, FIXME or "bug" in its source; ``todo_match`` picks the test:
  ``substring`` (as published: anywhere, any case, so "debug" and "todos" drop too)
  or ``word`` (whole words only);
* ``no_banned_imports``: it imports or uses none of os, sys, subprocess, argparse,
  setuptools, distutils, matplotlib, seaborn (configurable);
* ``max_lines``: at most 150 lines;
* ``has_arguments``: at least one argument;
* ``self_contained``: the function uses none of its file's own module-level
  helpers, constants or classes (imports are fine), so it stands alone as a seed;
* ``typechecks``: no error from a pyright-family checker (basedpyright at pyright's
  standard level). As published, each function is checked as a unit of its own:
  its file's import statements, then the function (``typecheck_unit: function``);
  ``typecheck_unit: file`` checks it inside its whole file instead;
* ``not_benchmark``: not taken from HumanEval prompts or solutions, nor from the
  ``benchmarks`` loaded from the Hub (MBPP in the paper recipe) or listed in
  ``benchmark_files`` (local copies, in a benchmark's own format or by fields);
* ``near_dedup``: one function kept per cluster of near-duplicates (MinHash over
  word 5-gram shingles of the source, Jaccard 0.5, datasketch LSH); it compares
  seeds across all batches, so it runs once every batch is committed and must
  come last in the chain;
* ``docstring_judge`` (off by default, on in the paper recipe; needs the model): few-shot
  yes/no prompts show the whole function and ask whether its docstring describes the
  code well (``docstring_judge.show: signature`` shows only the signature and docstring); a
  strict majority of ``samples`` answers must say yes (ties count as no). Like
  near_dedup it runs once every batch is committed, so both come last.

Counts add up: ``functions_found = rows_out + the sum of the function-level drops``
and ``rows_in = files_parsed + unparseable_file``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal

import pyarrow as pa
from pydantic import Field, field_validator

from pipeline.analysis.code_files import LocalCodeFiles, hub_files, stdlib_dir, table_files
from pipeline.analysis.pysource import FunctionInfo, UnparsableSource, extract_functions, has_todo_marker
from pipeline.analysis.typecheck import TypecheckError, function_has_type_errors, typecheck_sources
from pipeline.decontamination.index import BenchmarkFile, BenchmarkIndex, benchmark_index
from pipeline.dedup.near_dedup import NearDedupSettings, near_dedup
from pipeline.framework.config import StageConfig, StrictModel
from pipeline.framework.errors import InputError, PipelineError
from pipeline.framework.ids import stable_id
from pipeline.framework.inputs import DATA_SUFFIXES, InputSource
from pipeline.framework.preflight import Check, PreflightContext, RowEstimate
from pipeline.framework.stage import BatchResult, MapStage
from pipeline.generation.docstring_judge import JudgeSettings, judge_docstrings, judge_preflight

FilterName = Literal[
    "returns_value", "no_todo", "no_banned_imports", "max_lines", "has_arguments", "self_contained",
    "typechecks", "not_benchmark", "docstring_judge", "near_dedup",
]
WHOLE_OUTPUT_FILTERS = ("docstring_judge", "near_dedup")
DEFAULT_FILTERS = [
    "returns_value", "no_todo", "no_banned_imports", "max_lines", "has_arguments", "not_benchmark",
    "self_contained", "typechecks", "near_dedup",
]
BANNED = ["os", "sys", "subprocess", "argparse", "setuptools", "distutils", "matplotlib", "seaborn"]


class SourceConfig(StrictModel):
    """Where the code files come from."""

    kind: Literal["stdlib", "local", "files", "hub"] = Field(
        default="stdlib",
        description="stdlib: this interpreter's standard library; local: folders of .py files (paths); "
        "files: Parquet/JSONL tables of files (paths); hub: a Hub dataset streamed with datasets.",
    )
    paths: list[Path] = Field(default_factory=list, description="Folders or files for kind local/files.")
    exclude: list[str] = Field(
        default_factory=lambda: ["site-packages/*", "*/site-packages/*"],
        description="Glob patterns (relative paths) of .py files to skip, for kind stdlib/local.",
    )
    dataset: str = Field(
        default="bigcode/the-stack-dedup", description="Hub dataset id, for kind hub (The Stack v1 deduplicated, as published)."
    )
    data_dir: str | None = Field(default="data/python", description="Folder inside the Hub dataset.")
    split: str = Field(default="train", description="Split of the Hub dataset.")
    revision: str | None = Field(default=None, description="Revision (commit/tag) of the Hub dataset.")
    content_column: str = Field(default="content", description="Column holding the file text (files/hub).")
    path_column: str | None = Field(
        default="max_stars_repo_path", description="Column holding the file path (files/hub), if any."
    )
    max_files: int | None = Field(default=None, gt=0, description="Read at most this many files.")


class SeedsConfig(StageConfig):
    """Settings of the seeds stage."""

    source: SourceConfig = Field(default_factory=SourceConfig)
    filters: list[FilterName] = Field(
        default_factory=lambda: list(DEFAULT_FILTERS),
        description="The filter chain, applied in this order; remove a name to switch that filter off.",
    )
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
    benchmarks: list[Literal["mbpp", "ds1000"]] = Field(
        default_factory=list,
        description="Benchmarks loaded from the Hub to decontaminate against, besides HumanEval (the paper "
        "recipe: mbpp); offline, give a local copy in benchmark_files instead.",
    )
    benchmark_files: list[BenchmarkFile] = Field(
        default_factory=list,
        description="Local benchmark files (JSONL by fields, or MBPP / DS-1000 / HumanEval in their own format) to "
        "decontaminate against, besides HumanEval.",
    )
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
        if len(set(value)) != len(value):
            raise ValueError("a filter is listed twice")
        seen_whole = False
        for name in value:
            if name in WHOLE_OUTPUT_FILTERS:
                seen_whole = True
            elif seen_whole:
                raise ValueError(
                    f"{name} comes after a whole-output filter; docstring_judge and near_dedup run once every "
                    "batch is done, so they must come last"
                )
        return value


Candidate = tuple[dict, FunctionInfo]
"""A candidate seed: the file row it came from and the function."""


class SeedsStage(MapStage):
    """Extract seed functions from code files and filter them."""

    name = "seeds"
    title = "Seed functions with docstrings, extracted from a code corpus and filtered"
    upstream = None
    Config = SeedsConfig
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
        self._benchmarks: BenchmarkIndex | None = None

    def fingerprint_files(self) -> list[Path]:
        """The judge's bank, when the judge is on."""
        return [Path(self.config.docstring_judge.fewshot_file)] if "docstring_judge" in self.config.filters else []

    @property
    def uses_model(self) -> bool:  # type: ignore[override]
        """The model is part of the fingerprint only when the docstring judge is on."""
        return "docstring_judge" in self.config.filters

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_benchmarks"] = None
        return state

    # -- input ---------------------------------------------------------------
    def input_source(self, ctx, override: str | None) -> InputSource:
        """The configured corpus, or ``--input`` (a folder of .py files, or Parquet/JSONL of files)."""
        src = self.config.source
        if override is not None:
            path = Path(override)
            if not path.exists():
                raise InputError(f"--input {override}: no such file or folder")
            if path.is_file() and path.suffix in DATA_SUFFIXES or (
                path.is_dir() and any(p.suffix in DATA_SUFFIXES for p in path.rglob("*"))
            ):
                return table_files(path, src.content_column, src.path_column, src.max_files)
            return LocalCodeFiles([path], src.exclude, src.max_files)
        if src.kind == "stdlib":
            return LocalCodeFiles([stdlib_dir()], src.exclude, src.max_files, label=f"Python stdlib {stdlib_dir()}")
        if src.kind == "local":
            if not src.paths:
                raise InputError("stages.seeds.source.paths: give at least one folder for kind local")
            return LocalCodeFiles(src.paths, src.exclude, src.max_files)
        if src.kind == "files":
            if len(src.paths) != 1:
                raise InputError("stages.seeds.source.paths: give exactly one file or folder for kind files")
            return table_files(src.paths[0], src.content_column, src.path_column, src.max_files)
        return hub_files(
            src.dataset, src.data_dir, src.split, src.revision, src.content_column, src.path_column, src.max_files
        )

    def output_limit(self) -> int | None:
        return self.config.max_seeds

    def setup(self) -> None:
        if "not_benchmark" in self.config.filters and self._benchmarks is None:
            self._benchmarks = benchmark_index(self.config.benchmark_files, self.config.benchmarks)

    # -- the stage -----------------------------------------------------------
    def process_batch(self, rows: list[dict]) -> BatchResult:
        """Extract the candidate functions of a batch of files and run them through the filter chain."""
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
        for name in self.config.filters:
            if name in WHOLE_OUTPUT_FILTERS:
                continue
            passed = FILTERS[name](self, candidates)
            survivors = []
            for candidate, ok in zip(candidates, passed):
                if ok:
                    survivors.append(candidate)
                else:
                    result.drop(seed_row(candidate), name)
            candidates = survivors
        for candidate in candidates:
            result.keep(seed_row(candidate))
        return result

    # -- filters: each returns one keep/drop decision per candidate ----------
    def returns_value(self, candidates: list[Candidate]) -> list[bool]:
        """Keep functions that return a value."""
        return [fn.returns_value for _, fn in candidates]

    def no_todo(self, candidates: list[Candidate]) -> list[bool]:
        """Keep functions without TODO / FIXME / bug markers."""
        return [not has_todo_marker(fn.code, self.config.todo_match) for _, fn in candidates]

    def no_banned_imports(self, candidates: list[Candidate]) -> list[bool]:
        """Keep functions that neither import nor use a banned module."""
        banned = set(self.config.banned_imports)
        return [not (fn.modules & banned) for _, fn in candidates]

    def max_lines(self, candidates: list[Candidate]) -> list[bool]:
        """Keep functions of at most ``max_lines`` lines."""
        return [fn.num_lines <= self.config.max_lines for _, fn in candidates]

    def has_arguments(self, candidates: list[Candidate]) -> list[bool]:
        """Keep functions taking at least ``min_args`` arguments."""
        return [fn.num_args >= self.config.min_args for _, fn in candidates]

    def self_contained(self, candidates: list[Candidate]) -> list[bool]:
        """Keep functions that use none of their file's own helpers, constants or classes."""
        return [not fn.file_names for _, fn in candidates]

    def typechecks(self, candidates: list[Candidate]) -> list[bool]:
        """Keep functions with no type error; one checker run for the whole batch."""
        if self.config.typecheck_unit == "file":
            return self._typecheck_in_files(candidates)
        units = {f"u{i:05d}.py": fn.standalone_source for i, (_, fn) in enumerate(candidates)}
        diagnostics = self._checked(units)
        verdicts = []
        for name, (_, fn) in zip(units, candidates):
            last = units[name].count("\n")  # the function is the unit's last lines
            first = last - fn.num_lines + 1
            verdicts.append(not function_has_type_errors(diagnostics.get(name, []), first, last))
        return verdicts

    def _typecheck_in_files(self, candidates: list[Candidate]) -> list[bool]:
        """Check each file of the batch once and keep functions whose own lines have no error."""
        files = {file["id"]: file["content"] for file, _ in candidates}
        names = {fid: f"f{i:05d}.py" for i, fid in enumerate(files)}
        diagnostics = self._checked({names[fid]: text for fid, text in files.items()})
        return [
            not function_has_type_errors(diagnostics.get(names[file["id"]], []), fn.lineno, fn.end_lineno)
            for file, fn in candidates
        ]

    @staticmethod
    def _checked(sources: dict[str, str]) -> dict:
        """The type checker's diagnostics for ``sources``; a checker that fails is one line naming the filter."""
        if not sources:
            return {}
        try:
            return typecheck_sources(sources)
        except TypecheckError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise PipelineError(f"stages.seeds.filters: typechecks failed: {' '.join(lines)[:300]}; the batches "
                                "committed so far are kept (fix the checker, or remove typechecks from the "
                                "filters)") from None

    def not_benchmark(self, candidates: list[Candidate]) -> list[bool]:
        """Keep functions that are not taken from a benchmark's prompts or solutions."""
        if self._benchmarks is None:
            self.setup()
        return [self._benchmarks.contains_benchmark(fn.code) is None for _, fn in candidates]


    def whole_output_drops(self, store) -> dict[str, str]:
        """docstring_judge and near_dedup, in their order in the chain, over the seeds of all batches."""
        steps = [name for name in self.config.filters if name in WHOLE_OUTPUT_FILTERS]
        if not steps:
            return {}
        table = store.read_table(["id", "code"])
        rows = [r for r in table.to_pylist()]
        drops: dict[str, str] = {}
        for step in steps:
            rows = [r for r in rows if r["id"] not in drops]
            if not rows:
                break
            if step == "docstring_judge":
                drops.update({rid: step for rid, ok in self._judge(rows).items() if not ok})
            else:
                config = self.config.near_dedup.resolve(self.seed, self.run_config.workers)
                result = near_dedup([r["id"] for r in rows], [r["code"] for r in rows], config)
                drops.update({r["id"]: step for r, keep in zip(rows, result.keep) if not keep})
        return drops

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

    def _judge(self, rows: list[dict]) -> dict[str, bool]:
        """Ask the model whether each seed's docstring says enough to re-implement it."""
        if self.model_config is None:
            raise InputError("stages.seeds.filters has docstring_judge: the config needs a model section")
        from pipeline.llm import create_backend

        with create_backend(self.model_config) as backend:
            return judge_docstrings(backend, rows, self.config.docstring_judge, self.seed)


FILTERS: dict[str, Callable[[SeedsStage, list[Candidate]], list[bool]]] = {
    "returns_value": SeedsStage.returns_value,
    "no_todo": SeedsStage.no_todo,
    "no_banned_imports": SeedsStage.no_banned_imports,
    "max_lines": SeedsStage.max_lines,
    "has_arguments": SeedsStage.has_arguments,
    "self_contained": SeedsStage.self_contained,
    "typechecks": SeedsStage.typechecks,
    "not_benchmark": SeedsStage.not_benchmark,
}


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
