"""The seeds stage's filters, each declared once in :data:`SEED_FILTERS`.

A filter takes the candidates of one batch (``(file row, function)`` pairs), or
for a whole-output filter the kept seeds of every batch (rows with ``id`` and
``code``), and the :class:`~pipeline.framework.filters.FilterContext` holding
the stage's settings; it returns one keep/drop verdict per item. Declaring a
filter here is all it takes: the config's choices and default chain, the
whole-output rule and the docs follow from this registry.
"""

from __future__ import annotations

from pipeline.analysis.pysource import FunctionInfo, has_todo_marker
from pipeline.analysis.typecheck import TypecheckError, function_has_type_errors, typecheck_sources
from pipeline.framework.errors import InputError, PipelineError
from pipeline.framework.filters import FilterContext, FilterRegistry

Candidate = tuple[dict, FunctionInfo]
"""A candidate seed: the file row it came from and the function."""

SEED_FILTERS = FilterRegistry("seeds")


@SEED_FILTERS.register()
def returns_value(candidates: list[Candidate], ctx: FilterContext) -> list[bool]:
    """Keeps functions that return a value (a ``return <expr>`` other than ``None``)."""
    return [fn.returns_value for _, fn in candidates]


@SEED_FILTERS.register()
def no_todo(candidates: list[Candidate], ctx: FilterContext) -> list[bool]:
    """Keeps functions without TODO, FIXME or "bug" in their source; ``todo_match`` picks the test:
    ``substring`` (as published: anywhere, any case, so "debug" and "todos" drop too) or ``word``
    (whole words only)."""
    return [not has_todo_marker(fn.code, ctx.config.todo_match) for _, fn in candidates]


@SEED_FILTERS.register()
def no_banned_imports(candidates: list[Candidate], ctx: FilterContext) -> list[bool]:
    """Keeps functions that import or use none of ``banned_imports`` (os, sys, subprocess, argparse,
    setuptools, distutils, matplotlib, seaborn)."""
    banned = set(ctx.config.banned_imports)
    return [not (fn.modules & banned) for _, fn in candidates]


@SEED_FILTERS.register()
def max_lines(candidates: list[Candidate], ctx: FilterContext) -> list[bool]:
    """Keeps functions of at most ``max_lines`` lines (150)."""
    return [fn.num_lines <= ctx.config.max_lines for _, fn in candidates]


@SEED_FILTERS.register()
def has_arguments(candidates: list[Candidate], ctx: FilterContext) -> list[bool]:
    """Keeps functions taking at least ``min_args`` arguments (1)."""
    return [fn.num_args >= ctx.config.min_args for _, fn in candidates]


@SEED_FILTERS.register()
def not_benchmark(candidates: list[Candidate], ctx: FilterContext) -> list[bool]:
    """Keeps functions not taken from HumanEval's prompts or solutions, nor from the ``benchmarks``
    loaded from the Hub (MBPP in the paper recipe) or listed in ``benchmark_files`` (local copies, in a
    benchmark's own format or by fields)."""
    index = ctx.cached("benchmarks", ctx.config.decontamination_index)
    return [index.contains_benchmark(fn.code) is None for _, fn in candidates]


@SEED_FILTERS.register()
def self_contained(candidates: list[Candidate], ctx: FilterContext) -> list[bool]:
    """Keeps functions that use none of their file's own module-level helpers, constants or classes
    (imports are fine), so a seed stands alone."""
    return [not fn.file_names for _, fn in candidates]


@SEED_FILTERS.register()
def typechecks(candidates: list[Candidate], ctx: FilterContext) -> list[bool]:
    """Keeps functions with no error from a pyright-family checker (basedpyright at pyright's standard
    level), one checker run per batch. As published, each function is checked as a unit of its own: its
    file's import statements, then the function (``typecheck_unit: function``); ``typecheck_unit: file``
    checks it inside its whole file instead."""
    if ctx.config.typecheck_unit == "file":
        files = {file["id"]: file["content"] for file, _ in candidates}
        names = {fid: f"f{i:05d}.py" for i, fid in enumerate(files)}
        diagnostics = _checked({names[fid]: text for fid, text in files.items()})
        return [not function_has_type_errors(diagnostics.get(names[file["id"]], []), fn.lineno, fn.end_lineno)
                for file, fn in candidates]
    units = {f"u{i:05d}.py": fn.standalone_source for i, (_, fn) in enumerate(candidates)}
    diagnostics = _checked(units)
    verdicts = []
    for name, (_, fn) in zip(units, candidates):
        last = units[name].count("\n")  # the function is the unit's last lines
        verdicts.append(not function_has_type_errors(diagnostics.get(name, []), last - fn.num_lines + 1, last))
    return verdicts


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


@SEED_FILTERS.register(whole_output=True)
def near_dedup(seeds: list[dict], ctx: FilterContext) -> list[bool]:
    """Keeps one function per cluster of near-duplicates (MinHash over word 5-gram shingles of the
    source, Jaccard 0.5, datasketch LSH), comparing the seeds of every batch."""
    from pipeline.dedup.near_dedup import near_dedup as clusters

    settings = ctx.config.near_dedup.resolve(ctx.seed, ctx.workers)
    return clusters([r["id"] for r in seeds], [r["code"] for r in seeds], settings).keep


@SEED_FILTERS.register(default=False, whole_output=True)
def docstring_judge(seeds: list[dict], ctx: FilterContext) -> list[bool]:
    """Keeps functions whose docstring the model judges a good description of the code (on in the
    paper recipe; needs the model): few-shot yes/no prompts show the whole function
    (``docstring_judge.show: signature`` shows only the signature and docstring), and a strict
    majority of ``samples`` answers must say yes (ties count as no)."""
    from pipeline.generation.docstring_judge import judge_docstrings
    from pipeline.llm import create_backend

    if ctx.model_config is None:
        raise InputError("stages.seeds.filters has docstring_judge: the config needs a model section")
    with create_backend(ctx.model_config) as backend:
        verdicts = judge_docstrings(backend, seeds, ctx.config.docstring_judge, ctx.seed)
    return [verdicts[r["id"]] for r in seeds]
