"""The run report (--report): the page's sections, the text summary, escaping, and damaged work dirs.

The work dir comes from a real small run of every stage through
``run_pipeline.py --stage all`` (see :func:`build_work_dir`); what the page and
the summary must show is read from that run's manifests, never written by hand.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.framework.store import StageStore
from sandbox import SandboxConfig, SandboxUnavailable, ensure_image
from stages import PIPELINE
from tests.conftest import require_installed, run_cli, write_recipe
from tests.llm_fixtures import replay_model_section, replay_server, tiny_model_dir  # noqa: F401 - fixtures

SECTION_IDS = ["overview", "funnel", "drops", "execution", "loss", "evaluation", "samples"]
HOSTILE = "<script>alert('x')</script> & <b>bold</b>"
"""Text planted in a seed's docstring: the page must show it escaped, never run or render it."""


# -- building a work dir: a real small run of every stage --------------------------------------------------------

LONG_DOC = "\n".join(f"    Line {i} of a long docstring, so the report has text to clip." for i in range(24))
HOSTILE_MODULE = f'''def shout(text):
    """{HOSTILE}"""
    return text.upper()


def describe(value):
    """Describe a value at length.

{LONG_DOC}
    """
    return repr(value)
'''
"""A corpus module of ours: a docstring with markup in it, and a seed longer than a sample card shows."""


def make_runner(recipe: Path, work: Path | None = None):
    """A Runner over the recipe, as the command line builds it."""
    from pipeline.cli import _model_config_class
    from pipeline.framework.config import build_config_model, load_config
    from pipeline.framework.runner import Runner
    from pipeline.framework.stage import PlannedStage
    from stages import PIPELINE

    model = build_config_model({e.name: None if isinstance(e, PlannedStage) else e.Config for e in PIPELINE},
                               _model_config_class())
    overrides = [f"run.work_dir={work}"] if work is not None else []
    return Runner(load_config(recipe, model, overrides), PIPELINE)


def build_work_dir(root: Path, corpus: Path, server, model_dir: Path) -> Path:
    """Run every stage for real with ``--stage all``; return the recipe.

    Three seeds (our module first, then textwrap's); the generation stages and the base model's HumanEval
    answers come from the replay backend over the OpenAI API (model output fixtures: each instruction gets
    one response that passes its tests and one that fails them); execute and evaluate run in the Docker
    sandbox; finetune trains the tiny random model for two steps, and evaluate scores it too.
    """
    files = root / "corpus"
    files.mkdir(parents=True)
    (files / "hostile.py").write_text(HOSTILE_MODULE)
    shutil.copy(corpus / "textwrap.py", files / "textwrap.py")
    recipe = write_recipe(root / "recipe.yaml", root / "work", source={"kind": "local", "paths": [str(files)]},
                          max_seeds=3)
    data = yaml.safe_load(recipe.read_text())
    data["model"] = replay_model_section(server)
    sandbox = {"workers": 2, "timeout_s": 5}
    data["stages"].update({
        **{name: {"fewshot_k": 1, "batch_size": 2} for name in ("concepts", "instructions", "responses")},
        "execute": {"sandbox": sandbox},
        "finetune": {"base_model": str(model_dir), "max_steps": 2, "gradient_accumulation_steps": 1, "bf16": False,
                     "max_length": 256},
        "evaluate": {"limit": 3, "max_tokens": 16, "sandbox": sandbox,
                     "finetuned_overrides": {"backend": "transformers", "device": "cpu", "dtype": "float32"}},
    })
    data["stages"]["responses"]["n"] = 2
    recipe.write_text(yaml.safe_dump(data))
    result = run_cli("--config", str(recipe), "--stage", "all")
    assert result.returncode == 0, result.stderr[-5000:]
    return recipe


@pytest.fixture(scope="module")
def report_recipe(tmp_path_factory, stdlib_corpus, replay_server, tiny_model_dir) -> Path:  # noqa: F811
    """A recipe whose work dir has every stage's output, from a real run."""
    try:
        ensure_image(SandboxConfig())
    except SandboxUnavailable as exc:
        require_installed("Docker and the sandbox image", str(exc))
    return build_work_dir(tmp_path_factory.mktemp("report"), stdlib_corpus, replay_server, tiny_model_dir)


def manifests(recipe: Path) -> dict[str, dict]:
    """Every finished stage's manifest in the recipe's work dir."""
    work = recipe.parent / "work"
    return {p.parent.name: json.loads(p.read_text()) for p in work.glob("*/manifest.json")}


@pytest.fixture(scope="module")
def report_run(report_recipe):
    """``--report`` run once on the full work dir: the process result and the page."""
    result = run_cli("--config", str(report_recipe), "--report")
    page = (report_recipe.parent / "work" / "report.html").read_text()
    return result, page

# -- the page and the summary ----------------------------------------------------------------------------------------

def test_report_writes_every_section_and_prints_the_summary(report_run, report_recipe):
    result, page = report_run
    assert result.returncode == 0, result.stderr
    for section in SECTION_IDS:
        assert f'<section id="{section}">' in page
    out = result.stdout
    assert "stage funnel (rows out):" in out and "report: " in out and out.strip().endswith("report.html")
    found = manifests(report_recipe)
    for label, r in found["evaluate"]["results"]["humaneval"].items():
        r = r["base"]
        assert re.search(rf"{label} +{100 * r['pass@1']:.1f}%  \({r['passed']}/{r['total']}\)", out), (label, out)
    funnel = {line.split()[0]: line.split()[1:] for line in out.split("pass@1")[0].splitlines()[1:] if line.strip()}
    for name, manifest in found.items():
        assert funnel[name][:2] == ["done", str(manifest["rows_out"])], name
    assert len(found) == len(PIPELINE) and found["dedup"]["rows_out"] > 0, "every stage ran and some rows got through"


def test_page_is_self_contained_and_escaped(report_run):
    _, page = report_run
    assert re.findall(r'(?:src|href)="(?!data:|#)[^"]*"', page) == [] and "url(" not in page and "@import" not in page
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert 'src="data:image/png;base64,' in page and "Content-Security-Policy" in page


def test_page_content(report_run, report_recipe):
    _, page = report_run
    work = report_recipe.parent / "work"
    found = manifests(report_recipe)
    section = lambda name: page.split(f'id="{name}"')[1].split("</section>")[0]  # noqa: E731
    assert f"{found['seeds']['rows_out']:,}" in section("funnel")
    execution = section("execution")
    statuses = {k[len("status_"):]: v for k, v in found["execute"]["stats"].items() if k.startswith("status_")}
    assert {"passed", "failed"} <= set(statuses), "the replayed responses pass and fail their tests"
    for status in statuses:
        assert f">{status}<" in execution
    hits = found["execute"]["stats"].get("cache_hits")  # a first run records no hits at all
    assert (f"Verdict cache: {hits} of {sum(statuses.values())} samples" if hits is not None
            else "Verdict cache hits were not recorded.") in execution
    reasons = {reason for m in found.values() for reason in m["dropped"]}
    assert {"over_limit", "not_passed"} <= reasons
    for reason in reasons:
        assert f"<code>{reason}</code>" in section("drops")
    evaluation = section("evaluation")
    results = {label: r["base"] for label, r in found["evaluate"]["results"]["humaneval"].items()}
    assert list(results) == ["base", "finetuned"]
    assert "<b>humaneval</b></td>" + "".join(
        f"<td class=num>{100 * r['pass@1']:.1f} <small>({r['passed']}/{r['total']})</small></td>"
        for r in results.values()) in evaluation
    change = 100 * (results["finetuned"]["pass@1"] - results["base"]["pass@1"])
    assert f"humaneval {change:+.1f} points" in evaluation
    rows = StageStore(work, "evaluate").read_table().to_pylist()
    outcome = {(r["model"], r["task_id"]): r["passed"] for r in rows}
    differing = {t for _, t in outcome if outcome[("base", t)] != outcome[("finetuned", t)]}
    assert differing, "the replayed base model solves the even problems, the tiny model none"
    for task in {t for _, t in outcome}:
        assert (f"<code>{task}</code>" in evaluation) == (task in differing), task
    assert 'id="pass-at-k"' not in evaluation, "greedy decoding: pass@1 only, no curve"
    loss = section("loss")
    assert 'id="loss-curve"' in loss and "final_loss" in loss and "global_step" in loss
    samples = page.split('id="samples"')[1]
    assert samples.count('class="sample"') == sum(min(3, m["rows_out"]) for m in found.values())
    dropped = sum(min(3, StageStore(work, name).read_dropped().num_rows) for name in found)
    assert samples.count('class="sample dropped"') == dropped > 0
    assert "[assistant]" in samples and "more character" in samples


def test_samples_are_reproducible(report_recipe):
    from pipeline.report import build_report

    runner = make_runner(report_recipe)
    views = build_report(runner).views
    first = [[r["id"] for r in v.samples] for v in views]
    again = [[r["id"] for r in v.samples] for v in build_report(runner).views]
    rows_out = {name: m["rows_out"] for name, m in manifests(report_recipe).items()}
    assert first == again and [len(ids) for ids in first] == [min(3, rows_out[v.name]) for v in views]


# -- work dirs that are empty, unfinished or damaged ----------------------------------------------------------------

def test_report_on_a_work_dir_with_nothing_run(tmp_path):
    recipe = write_recipe(tmp_path / "recipe.yaml", tmp_path / "work")
    result = run_cli("--config", str(recipe), "--report")
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "work/report.html").read_text()
    for section in SECTION_IDS:
        assert f'<section id="{section}">' in page
    assert "The execute stage has no output yet (missing)" in page
    assert "pass@1: no results yet (evaluate: " in result.stdout
    assert [line.split()[1] for line in result.stdout.splitlines()[1:4]] == ["missing"] * 3


def test_report_survives_a_damaged_work_dir(report_recipe, tmp_path):
    from pipeline.report import write_report

    work = tmp_path / "work"
    shutil.copytree(report_recipe.parent / "work", work)
    (work / "instructions/manifest.json").write_text("{not json")
    (work / "responses/manifest.json").unlink()  # parts without a manifest: an interrupted run
    (work / "execute" / "part-00000.parquet").write_bytes(b"garbage")
    (work / "finetune/loss.png").write_bytes(b"GIF89a")
    manifest = json.loads((work / "evaluate/manifest.json").read_text())
    manifest["results"] = {"base": {"pass@1": "n/a"}, "finetuned": None}
    (work / "evaluate/manifest.json").write_text(json.dumps(manifest))
    summary = write_report(make_runner(report_recipe, work))
    page = (work / "report.html").read_text()
    for section in SECTION_IDS:
        assert f'<section id="{section}">' in page
    assert "could not read:" in summary and "instructions: state: StoreError" in summary
    assert "responses" in summary and "(unfinished run, so far)" in summary
    assert "not a PNG" in page and "corrupted" in page
    assert "base" in summary and "(-/-)" in summary


def test_stage_without_manifest_shows_counts_so_far(report_recipe, tmp_path):
    from pipeline.report import build_report

    work = tmp_path / "work"
    shutil.copytree(report_recipe.parent / "work", work)
    (work / "seeds/manifest.json").unlink()
    views = {v.name: v for v in build_report(make_runner(report_recipe, work)).views}
    assert views["seeds"].state == "interrupted" and views["seeds"].partial
    log = StageStore(work, "seeds").commit_log()
    assert views["seeds"].get("rows_out") == log.rows
    assert views["seeds"].dropped == dict(log.dropped) == manifests(report_recipe)["seeds"]["dropped"] != {}


# -- pieces ---------------------------------------------------------------------------------------------------------

def test_bar_chart_escapes_labels_and_marks_absent_values():
    from pipeline.report.svg import Bar, hbar_chart

    svg = hbar_chart([Bar("a<b", 10.0), Bar("none", None, text="missing")], title="t & u")
    assert "a&lt;b" in svg and "t &amp; u" in svg and svg.count("<rect") == 1 and 'class="value muted"' in svg


def test_clip_counts_what_it_cuts():
    from pipeline.report.samples import clip

    assert clip("short") == ("short", 0)
    shown, cut = clip("x\n" * 100, max_lines=5)
    assert shown == "x\nx\nx\nx\nx" and cut == 199 - len(shown)  # the trailing newline is not counted
    assert clip("y" * 50, max_chars=20) == ("y" * 20, 30)


def test_evaluation_section_draws_pass_at_k_flips_and_the_judge(tmp_path):
    """A sampled, judged evaluation's manifest fields (in the shape pipeline.benchmarks.summary writes them):
    the benchmark x model table with solved/total, the change, the pass@k curve, the flips and the judge's tally."""
    from pipeline.report.collect import StageView
    from pipeline.report.evaluation import evaluation_section

    scores = {"base": (0.3333, 0.5, 4), "finetuned": (0.5, 0.75, 6)}
    manifest = {
        "results": {"humaneval": {m: {"base": {"pass@1": p1, "pass@5": p5, "passed": n, "total": 12}}
                                  for m, (p1, p5, n) in scores.items()}},
        "models": {"base": {"prompt_format": "completion", "model_path": "gemma-3-270m"},
                   "finetuned": {"prompt_format": "chat", "model_path": "work/finetune/model"}},
        "flipped": {"humaneval": {"from": "base", "to": "finetuned", "gained": ["HumanEval/1", "HumanEval/9"],
                                  "lost": []}},
        "judge": {"win": 5, "tie": 2, "loss": 1, "invalid": 0, "first": "base", "second": "finetuned",
                  "judge_model": "a-strong-model", "rows": "judge.jsonl"},
    }
    html = evaluation_section(StageView("evaluate", "Evaluate", "done", tmp_path, manifest=manifest))
    assert ("<b>humaneval</b></td><td class=num>33.3 <small>(4/12)</small></td>"
            "<td class=num>50.0 <small>(6/12)</small></td>") in html
    assert "humaneval +16.7 points" in html and "<code>HumanEval/1</code>" in html and "HumanEval/3" not in html
    assert 'id="pass-at-k"' in html and "polyline" in html, "the pass@k curve"
    assert "solved by finetuned only (2)" in html and "solved by base only (0)" in html
    assert "Judged by a-strong-model" in html and "<td class=num>5</td>" in html
