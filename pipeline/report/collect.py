"""Gather what the report shows about each stage, without ever failing on a damaged work dir.

Each stage becomes a :class:`StageView`: its state as the runner sees it, its
manifest (or, for an interrupted stage, the counts its committed parts add up
to), a few sampled rows, and what could not be read. A stage the runner
lists as not built may still have output on disk (written by a newer
checkout); the report shows that output too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.framework.store import StageStore
from pipeline.report.samples import sample_rows

UNREADABLE = "unreadable"


@dataclass
class StageView:
    """One stage as the report shows it."""

    name: str
    title: str
    state: str
    folder: Path
    why: str = ""
    manifest: dict | None = None
    partial: bool = False
    """True when ``manifest`` is summed from the parts of an unfinished run, not written by the stage."""
    samples: list[dict] = field(default_factory=list)
    dropped_samples: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """What could not be read, one line each."""

    @property
    def has_output(self) -> bool:
        """Whether there are counts to show (a manifest or committed parts)."""
        return self.manifest is not None

    def get(self, key: str, default: Any = None) -> Any:
        """A manifest field, or ``default`` when there is no manifest or no such field."""
        return (self.manifest or {}).get(key, default)

    @property
    def dropped(self) -> dict[str, int]:
        """Drop counts by reason."""
        return dict(self.get("dropped") or {})

    @property
    def stats(self) -> dict[str, Any]:
        """The stage's counters."""
        return dict(self.get("stats") or {})


def describe_error(exc: BaseException) -> str:
    """One line naming an exception."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _partial_manifest(store: StageStore) -> dict:
    """What the committed parts of an unfinished stage add up to, shaped like a manifest."""
    log = store.commit_log()
    return {"rows_in": len(log.input_ids), "rows_out": log.rows, "dropped": dict(log.dropped),
            "stats": dict(log.stats), "parts": log.parts}


def collect_stage(runner, entry, memo: dict, samples: int, seed: Any) -> StageView:
    """The view of one registry entry; every read is guarded and a failure becomes a problem line."""
    store = runner.store(entry.name)
    view = StageView(entry.name, getattr(entry, "title", ""), "unknown", store.dir)
    try:
        state = runner.state(entry.name, memo)
        view.state, view.why, view.manifest = state.state, state.why, state.manifest
    except Exception as exc:  # a corrupted manifest here or upstream must not stop the report
        view.state = UNREADABLE
        view.problems.append(f"state: {describe_error(exc)}")
    if view.manifest is None:
        try:
            view.manifest = store.read_manifest()
            if view.manifest is None and store.part_paths():
                view.manifest, view.partial = _partial_manifest(store), True
        except Exception as exc:
            view.problems.append(f"manifest: {describe_error(exc)}")
    for attr, paths in (("samples", store.part_paths), ("dropped_samples", store.dropped_paths)):
        try:
            setattr(view, attr, sample_rows(paths(), samples, f"{seed}:{entry.name}:{attr}"))
        except Exception as exc:
            view.problems.append(f"{attr.replace('_', ' ')}: {describe_error(exc)}")
    return view


def collect(runner, samples: int = 3) -> list[StageView]:
    """A view of every stage in pipeline order, ``samples`` kept and dropped rows each, chosen with the run seed."""
    memo: dict = {}
    seed = getattr(getattr(runner.config, "run", None), "seed", 0)
    return [collect_stage(runner, entry, memo, samples, seed) for entry in runner.registry]


def find(views: list[StageView], name: str) -> StageView | None:
    """The view of the stage called ``name``, if the pipeline has one."""
    return next((v for v in views if v.name == name), None)
