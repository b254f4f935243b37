"""The run report: one HTML page about a work dir, and a text summary for the terminal.

``python run_pipeline.py --config X --report`` writes ``work_dir/report.html``
(self-contained: inline CSS, inline SVG charts, the loss curve as a data URI,
no script) and prints the stage funnel and pass@1. The page shows every
stage's state, the funnel, drop reasons, execution statuses, the loss curve,
the evaluation and a few sampled rows per stage. A missing, unfinished,
unbuilt or damaged stage is shown as such; the report itself never fails on
what it finds in the work dir.

Built with the standard library only (string building and ``html.escape``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.framework.store import atomic_write_bytes
from pipeline.report.collect import StageView, collect
from pipeline.report.page import render_page
from pipeline.report.text import text_summary

REPORT_FILE = "report.html"
SAMPLES_PER_STAGE = 3


@dataclass
class Report:
    """A rendered report: the stage views it was drawn from, the HTML page and the text summary."""

    views: list[StageView]
    html: str
    text: str


def build_report(runner, samples: int = SAMPLES_PER_STAGE) -> Report:
    """Read every stage of the runner's work dir and render the page and the summary (writes nothing)."""
    views = collect(runner, samples=samples)
    config = runner.config
    meta = {
        "work dir": str(config.run.work_dir),
        "run seed": str(getattr(config.run, "seed", "")),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    title = f"Run report: {getattr(config, 'name', 'pipeline')}"
    html = render_page(views, title=title, meta=meta)
    return Report(views, html, text_summary(views))


def write_report(runner, path: Path | None = None, samples: int = SAMPLES_PER_STAGE) -> str:
    """Write the HTML page (default ``work_dir/report.html``) atomically; return the text summary naming it."""
    report = build_report(runner, samples=samples)
    path = Path(path) if path is not None else Path(runner.config.run.work_dir) / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, report.html.encode("utf-8"))
    return text_summary(report.views, html_path=path)
