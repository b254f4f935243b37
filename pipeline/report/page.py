"""The report page: one self-contained HTML file (inline CSS, inline SVG, images as data URIs).

The page loads nothing: its Content-Security-Policy forbids every fetch
except ``data:`` images and inline styles, and it runs no script. Each
section is drawn on its own; a section that fails to draw says so and the
rest of the page is still written.
"""

from __future__ import annotations

from typing import Callable

from pipeline.report import results, sections
from pipeline.report.collect import StageView, describe_error, find
from pipeline.report.markup import esc, note

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
:root { --fg:#1f2328; --muted:#656d76; --line:#d0d7de; --soft:#f6f8fa; --accent:#4c78a8; }
* { box-sizing: border-box; }
body { margin:0; color:var(--fg); background:#fff;
  font:14px/1.5 -apple-system, "Segoe UI", "Liberation Sans", "DejaVu Sans", Helvetica, Arial, sans-serif; }
header { background:#24292f; color:#fff; padding:18px 32px 10px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; }
header .meta { color:#c9d1d9; font-size:13px; }
header .meta code { color:#fff; }
nav { margin-top:10px; display:flex; flex-wrap:wrap; gap:4px 16px; }
nav a { color:#9ecbff; text-decoration:none; font-size:13px; }
main { max-width:1180px; margin:0 auto; padding:8px 32px 48px; }
section { border-bottom:1px solid var(--line); padding:12px 0 20px; }
h2 { font-size:18px; margin:14px 0 10px; }
h3 { font-size:15px; margin:14px 0 6px; }
h3 small { color:var(--muted); font-weight:normal; margin-left:6px; }
table { border-collapse:collapse; margin:6px 0 10px; font-size:13px; }
th, td { border-bottom:1px solid var(--line); padding:4px 10px; text-align:left; vertical-align:top; }
th { background:var(--soft); font-weight:600; }
table.kv td { max-width:420px; word-break:break-all; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
table.overview td:nth-child(7) { color:var(--muted); max-width:300px; }
table.overview td:last-child { color:var(--muted); max-width:260px; }
code { font-family:"DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace; font-size:12px; }
.chart { display:block; max-width:100%; height:auto; margin:6px 0; }
.chart text { font:12px "DejaVu Sans", "Liberation Sans", Arial, sans-serif; fill:var(--fg); }
.chart text.value { fill:#444; }
.chart text.muted { fill:#999; font-style:italic; }
.state { display:inline-block; padding:0 8px; border-radius:10px; font-size:12px; line-height:18px;
  background:#eaeef2; color:#57606a; white-space:nowrap; font-weight:normal; }
.state-done { background:#dafbe1; color:#116329; }
.state-stale { background:#fff8c5; color:#7d4e00; }
.state-interrupted { background:#ddf4ff; color:#0550ae; }
.state-not-built { background:#f6f8fa; color:#8c959f; border:1px dashed #d0d7de; }
.state-unreadable { background:#ffebe9; color:#cf222e; }
.note { color:var(--muted); margin:4px 0 8px; }
.note.problem { color:#cf222e; }
.note.delta { color:var(--fg); font-weight:600; }
.minibar { display:inline-block; height:10px; border-radius:2px; vertical-align:middle; }
.dot { display:inline-block; width:10px; height:10px; border-radius:50%; margin-right:6px; vertical-align:middle; }
.drop-grid, .pair { display:grid; grid-template-columns:repeat(auto-fill, minmax(420px, 1fr)); gap:0 28px; }
.side { display:flex; flex-wrap:wrap; align-items:flex-start; gap:8px 40px; }
figure { margin:8px 0; }
figure img { max-width:100%; border:1px solid var(--line); border-radius:4px; }
figcaption { color:var(--muted); font-size:12px; }
.stage-samples { margin-bottom:12px; }
.sample { border:1px solid var(--line); border-radius:6px; margin:8px 0; padding:8px 12px; background:#fff; }
.sample.dropped { border-color:#f5c2c0; background:#fffafa; }
.shead { color:var(--muted); font-size:12px; }
.tags { margin:4px 0; }
.tag { display:inline-block; background:var(--soft); border:1px solid var(--line); border-radius:4px;
  padding:0 6px; margin:2px 6px 2px 0; font-size:12px; }
.fname { font-size:12px; font-weight:600; color:var(--muted); margin-top:6px; }
pre { margin:2px 0; padding:6px 8px; background:var(--soft); border-radius:4px; white-space:pre-wrap;
  word-break:break-word; font:12px/1.45 "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace; }
.cut { color:var(--muted); font-size:12px; font-style:italic; }
details summary { cursor:pointer; color:var(--muted); margin:6px 0; }
"""

SECTIONS: list[tuple[str, str, Callable[[list[StageView]], str]]] = [
    ("overview", "Stages", sections.overview),
    ("funnel", "Stage funnel", sections.funnel),
    ("drops", "Drop reasons", sections.drops),
    ("execution", "Execution statuses", lambda views: results.execution(find(views, "execute"))),
    ("loss", "Loss curve", lambda views: results.loss(find(views, "finetune"))),
    ("evaluation", "Evaluation", lambda views: results.evaluation(find(views, "evaluate"))),
    ("samples", "Sampled rows", sections.samples),
]
"""Section id, heading and the function drawing its body, in page order."""


def render_section(section_id: str, heading: str, draw: Callable[[list[StageView]], str], views: list[StageView]) -> str:
    """One ``<section>``; if drawing it fails, the section says so instead of breaking the page."""
    try:
        body = draw(views)
    except Exception as exc:
        body = note(f"This section could not be drawn: {describe_error(exc)}", "note problem")
    return f'<section id="{esc(section_id)}"><h2>{esc(heading)}</h2>{body}</section>'


def render_page(views: list[StageView], *, title: str, meta: dict[str, str]) -> str:
    """The whole HTML document for the stage views; ``meta`` is shown under the title (work dir, seed, ...)."""
    info = " · ".join(f"{esc(k)} <code>{esc(v)}</code>" for k, v in meta.items())
    links = "".join(f'<a href="#{esc(sid)}">{esc(heading)}</a>' for sid, heading, _ in SECTIONS)
    body = "".join(render_section(sid, heading, draw, views) for sid, heading, draw in SECTIONS)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n"
        f'<body><header><h1>{esc(title)}</h1><div class="meta">{info}</div><nav>{links}</nav></header>\n'
        f"<main>{body}</main></body></html>\n"
    )
