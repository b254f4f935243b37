"""Check a recipe before a long run: ``python run_pipeline.py -c RECIPE --preflight``.

The framework part: it asks each selected stage for its checks (the
``preflight_checks(ctx)`` hook of :class:`pipeline.framework.stage.Stage`), adds the
checks that belong to the run as a whole (the work dir is writable, the Hub
token is there when publishing is on), and prints one table: stage, check,
measured value, limit, verdict. Every failure then gets one line naming the
stage, the key and the numbers, and the exit status is non-zero.

Row counts for a stage's generation budget are estimated without running
anything: a stage whose upstream has finished reads the upstream manifest's
``rows_out``; otherwise each stage in pipeline order turns its input estimate
into an output estimate through its ``preflight_rows`` hook (a generation
stage multiplies by ``n``, a source stage starts from its configured cap).
When no cap is known the count stays unknown and the budget is given per row
of the source stage instead.

This module knows no stage by name; nothing here loads a model.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from pipeline.framework.errors import PipelineError
from pipeline.framework.store import StageStore

OK, WARN, INFO, FAIL = "ok", "warn", "info", "FAIL"


@dataclass(frozen=True)
class RowEstimate:
    """How many rows a stage reads or writes, as far as can be told before running it.

    ``count`` is None when unknown; ``per_source`` then says how many rows each
    row of the ``source`` stage turns into, so budgets can be given per source row.
    """

    count: int | None
    how: str
    per_source: float = 1.0
    source: str = ""

    def times(self, factor: int, label: str) -> "RowEstimate":
        """This estimate multiplied by ``factor`` (e.g. ``n`` completions per row), ``label`` saying why."""
        count = None if self.count is None else self.count * factor
        how = self.how if factor == 1 else f"{self.how} x {label} {factor}"
        return RowEstimate(count, how, self.per_source * factor, self.source)


@dataclass
class Check:
    """One row of the preflight table.

    ``problem`` is the one-line message printed for a failure or a warning;
    ``budget`` / ``budget_per_source`` are generation tokens this row adds to the
    run's total (known count, or tokens per source row when the count is unknown).
    """

    stage: str
    name: str
    measured: str
    limit: str = ""
    verdict: str = OK
    problem: str = ""
    budget: int | None = None
    budget_per_source: float | None = None
    budget_source: str = ""


@dataclass
class PreflightContext:
    """What a stage's checks can reach: the config, stores, row estimates and a shared cache."""

    pipeline_config: Any
    rows: dict[str, tuple[RowEstimate, RowEstimate]] = field(default_factory=dict)
    """Per stage: (estimate of its input rows, estimate of its output rows)."""
    _cache: dict[Any, Any] = field(default_factory=dict)

    @property
    def work_dir(self) -> Path:
        """The run's work directory."""
        return Path(self.pipeline_config.run.work_dir)

    def store(self, name: str) -> StageStore:
        """Any stage's output folder by name."""
        return StageStore(self.work_dir, name)

    def rows_in(self, name: str) -> RowEstimate:
        """The estimated number of input rows of a stage."""
        return self.rows[name][0]

    def rows_out(self, name: str) -> RowEstimate:
        """The estimated number of output rows of a stage."""
        return self.rows[name][1]

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()`` once per key for the whole preflight (a tokenizer shared by several stages, for example)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def first_time(self, key: Any) -> bool:
        """True the first time ``key`` is asked about in this preflight (to show a shared row once)."""
        marker = ("first_time", key)
        if marker in self._cache:
            return False
        self._cache[marker] = True
        return True

    def sample_rows(self, name: str, columns: Sequence[str], size: int, scan: int = 20_000) -> list[dict[str, Any]]:
        """Up to ``size`` rows of stage ``name``'s output in the work dir, the longest first.

        Reads at most ``scan`` rows and keeps those whose ``columns`` hold the
        most text (the rows most likely to make the longest prompts); an empty
        list when that stage has written nothing.
        """
        store = self.store(name)
        if not store.part_paths():
            return []
        rows: list[dict[str, Any]] = []
        for row in store.iter_rows(columns=[*columns]):
            rows.append(row)
            if len(rows) >= scan:
                break
        rows.sort(key=lambda r: -sum(len(str(r.get(c) or "")) for c in columns))
        return rows[:size]


@dataclass
class PreflightReport:
    """Every check of one preflight, in order."""

    checks: list[Check]

    @property
    def failures(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if c.verdict == FAIL]

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return not self.failures

    def table(self) -> str:
        """The checks as one aligned text table."""
        head = ("stage", "check", "measured", "limit", "verdict")
        rows = [head] + [(c.stage, c.name, c.measured, c.limit, c.verdict) for c in self.checks]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
        lines = []
        for i, row in enumerate(rows):
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
            if i == 0:
                lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 7)
        return "\n".join(lines)

    def problem_lines(self) -> list[str]:
        """One line per failure (then per warning), each naming the stage, the key and the numbers."""
        fails = [c.problem or f"{c.stage}: {c.name}: {c.measured}" for c in self.failures]
        warns = [f"warning: {c.problem}" for c in self.checks if c.verdict == WARN and c.problem]
        return fails + warns


def estimate_rows(runner: Any) -> dict[str, tuple[RowEstimate, RowEstimate]]:
    """Input and output row estimates of every built stage, in pipeline order (see the module docstring)."""
    estimates: dict[str, tuple[RowEstimate, RowEstimate]] = {}
    for entry in runner.registry:
        if not _built(entry):
            continue
        upstream = entry.upstream
        if upstream is None:
            rows_in = RowEstimate(None, f"{entry.name}: its source", 1.0, entry.name)
        else:
            rows_in = _done_rows(runner, upstream) or (
                estimates[upstream][1] if upstream in estimates else RowEstimate(None, f"{upstream}: unknown")
            )
        rows_out = _done_rows(runner, entry.name) or runner.stage(entry.name).preflight_rows(rows_in)
        estimates[entry.name] = (rows_in, rows_out)
    return estimates


def _built(entry: Any) -> bool:
    """Whether a registry entry is a built stage (a Stage class) rather than a planned one (an instance)."""
    return isinstance(entry, type)


def _done_rows(runner: Any, name: str) -> RowEstimate | None:
    """The row count of a finished stage, from its manifest."""
    state = runner.state(name)
    if state.state != "done" or not state.manifest:
        return None
    count = int(state.manifest.get("rows_out", 0))
    return RowEstimate(count, f"{count:,} {name} rows in the work dir")


def work_dir_check(work_dir: Path) -> Check:
    """The work dir (or the nearest folder that exists above it) accepts a new file."""
    target = Path(work_dir).resolve()
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return Check("run", "work dir writable", f"{existing} is not a folder", str(work_dir), FAIL,
                     f"run: run.work_dir {work_dir} cannot be created: {existing} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".preflight-"):
            pass
    except OSError as exc:
        return Check("run", "work dir writable", f"cannot write in {existing}", str(work_dir), FAIL,
                     f"run: run.work_dir {work_dir}: cannot write in {existing} ({exc.strerror or exc})")
    where = "exists" if existing == target else f"will be created under {existing}"
    return Check("run", "work dir writable", where, str(work_dir), OK)


def hub_token_check(hub: Any) -> Check | None:
    """When publishing is on (``hub.namespace`` set), the token's environment variable must be set."""
    if hub is None or not hub.namespace:
        return None
    if os.environ.get(hub.token_env):
        return Check("hub", "Hub token for publishing", f"${hub.token_env} set", f"hub.namespace {hub.namespace}", OK)
    return Check("hub", "Hub token for publishing", f"${hub.token_env} not set", f"hub.namespace {hub.namespace}", FAIL,
                 f"hub: hub.namespace is {hub.namespace!r} (publishing on) but ${hub.token_env} (hub.token_env) "
                 "is not set")


def budget_total(checks: list[Check]) -> Check | None:
    """The run's generation budget: the known tokens, plus tokens per source row for stages with unknown counts."""
    budgets = [c for c in checks if c.budget is not None or c.budget_per_source is not None]
    if not budgets:
        return None
    known = sum(c.budget or 0 for c in budgets)
    per_source: dict[str, float] = {}
    for c in budgets:
        if c.budget is None and c.budget_per_source is not None:
            per_source[c.budget_source] = per_source.get(c.budget_source, 0.0) + c.budget_per_source
    measured = f"{known:,} tokens"
    for source, tokens in per_source.items():
        measured += f" + {round(tokens):,} tokens per {source} row (count unknown)"
    return Check("all", "generation budget, whole run", measured, "", INFO)


def run_preflight(runner: Any, names: Sequence[str]) -> PreflightReport:
    """Run the run-wide checks and each selected built stage's checks; add the total generation budget."""
    config = runner.config
    ctx = PreflightContext(config, rows=estimate_rows(runner))
    checks = [work_dir_check(config.run.work_dir)]
    hub = hub_token_check(getattr(config, "hub", None))
    if hub is not None:
        checks.append(hub)
    for name in names:
        if not _built(runner.entry(name)):
            continue
        try:
            checks += runner.stage(name).preflight_checks(ctx)
        except PipelineError as exc:  # a check that cannot even be made is a failure of that stage
            checks.append(Check(name, "preflight", "cannot check", "", FAIL, f"{name}: {exc}"))
    total = budget_total(checks)
    if total is not None:
        checks.append(total)
    return PreflightReport(checks)
