"""The run report (--report): the page's sections, the text summary, escaping, and damaged work dirs.

The work dir is realistic: the real seeds stage runs on standard-library
files through ``run_pipeline.py``; the later stages' outputs are written
through the store, as those stages would write them, with plausible rows, an
evaluate manifest with results and a small PNG loss curve.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from pipeline.store import StageStore
from tests.conftest import run_cli, write_recipe

SECTION_IDS = ["overview", "funnel", "drops", "execution", "loss", "evaluation", "samples"]
HOSTILE = "<script>alert('x')</script> & <b>bold</b>"
"""Text planted in an instruction: the page must show it escaped, never run or render it."""


# -- building a work dir -------------------------------------------------------------------------------------------

def tiny_png(width: int = 360, height: int = 180) -> bytes:
    """A valid PNG drawn by hand: a falling loss curve in blue on white, axes in grey."""
    pixels = [[(255, 255, 255)] * width for _ in range(height)]
    for x in range(width):
        pixels[height - 12][x] = (150, 150, 150)
    for y in range(height):
        pixels[y][12] = (150, 150, 150)
    for x in range(14, width - 4):
        loss = 0.35 + 2.0 * math.exp(-(x - 14) / 50) + 0.06 * math.sin(x / 3)
        y = int((height - 14) - loss / 2.5 * (height - 24))
        for dy in (-1, 0, 1):
            pixels[min(height - 13, max(0, y + dy))][x] = (76, 120, 168)
    raw = b"".join(b"\x00" + bytes(c for px in row for c in px) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def make_runner(recipe: Path, work: Path | None = None):
    """A Runner over the recipe, as the command line builds it."""
    from pipeline.cli import _model_config_class
    from pipeline.config import build_config_model, load_config
    from pipeline.runner import Runner
    from pipeline.stage import PlannedStage
    from stages import PIPELINE

    model = build_config_model({e.name: None if isinstance(e, PlannedStage) else e.Config for e in PIPELINE},
                               _model_config_class())
    overrides = [f"run.work_dir={work}"] if work is not None else []
    return Runner(load_config(recipe, model, overrides), PIPELINE)


def write_stage(runner, name: str, batches: list[tuple[list[dict], list[dict]]], stats: dict, **extra) -> None:
    """Write a stage's parts and manifest through the store, as the framework does, so the runner sees it done."""
    from pipeline.stage import PlannedStage

    entry = runner.entry(name)
    built = not isinstance(entry, PlannedStage)
    store = runner.store(name)
    store.clear()
    store.dir.mkdir(parents=True)
    schema = entry.output_schema() if built else None
    rows_in, dropped = 0, {}
    for i, (rows, drops) in enumerate(batches):
        ids = [r["id"] for r in rows + drops]
        store.write_batch(f"{i:05d}", rows, schema, drops, ids, stats if i == 0 else {})
        rows_in += len(ids)
        for d in drops:
            dropped[d["drop_reason"]] = dropped.get(d["drop_reason"], 0) + 1
    upstream = runner.store(entry.upstream).read_manifest() or {}
    store.write_manifest({
        "stage": name, "title": entry.title,
        "fingerprint": runner.fingerprint(runner.stage(name)) if built else "planned",
        "input": {"kind": "upstream", "spec": None, "description": f"stage {entry.upstream}",
                  "digest": upstream.get("output_digest")},
        "rows_in": rows_in, "rows_out": sum(len(rows) for rows, _ in batches), "dropped": dropped, "stats": stats,
        "finished_at": "2025-01-01T00:00:00+0000", "wall_seconds": 12.5 + 60 * len(name),
        "output_digest": store.output_digest(), "config": {"stage": {}, "seed": 42}, **extra,
    })


def _code(seed: dict) -> str:
    """A response's answer for a seed: a short explanation and a fenced solution."""
    return f"Here is a solution using `{seed['name']}`:\n\n```python\n{seed['code']}\n```\n"


def fill_downstream(runner) -> None:
    """Plausible outputs for every stage after seeds, derived from the real seeds."""
    seeds = runner.store("seeds").read_table().to_pylist()
    concepts = [{"id": f"c{i}", "seed_id": s["id"], "seed": s["code"],
                 "concepts": ["docstring parsing", f"{s['name']} helper", "early return"]} for i, s in enumerate(seeds[1:])]
    write_stage(runner, "concepts", [(concepts[:5], [{"id": "c-x", "seed_id": seeds[0]["id"], "drop_reason": "truncated",
                                                      "text": "Concepts: recursion, " * 80}]), (concepts[5:], [])],
                {"prompt_tokens": 48210, "completion_tokens": 3022})
    kinds = [("function", "easy"), ("class", "medium"), ("program", "hard")]
    instructions = [{"id": f"i{i}", "seed_id": c["seed_id"], "concepts_id": c["id"], "concepts": c["concepts"],
                     "category": kinds[i % 3][0], "difficulty": kinds[i % 3][1],
                     "instruction": f"{HOSTILE}\nWrite a Python function that uses "
                     f"{', '.join(c['concepts'])}. It must return a value for every input x < 10 && y > 2."}
                    for i, c in enumerate(concepts)]
    write_stage(runner, "instructions", [(instructions[:-1], [{"id": "i-x", "drop_reason": "unparsable", "text": "###"}])],
                {"completion_tokens": 5120})
    by_seed = {s["id"]: s for s in seeds}
    responses = [{"id": f"r{i}-{k}", "seed_id": ins["seed_id"], "instruction_id": ins["id"],
                  "instruction": ins["instruction"], "sample_index": k, "response": _code(by_seed[ins["seed_id"]]),
                  "tests": f"assert {by_seed[ins['seed_id']]['name']} is not None\nassert 1 + 1 == 2"}
                 for i, ins in enumerate(instructions[:-1]) for k in range(2)]
    write_stage(runner, "responses", [(responses, [{"id": "r-x", "drop_reason": "no_tests", "response": "pass"},
                                                   {"id": "r-y", "drop_reason": "truncated", "response": "def f("}])],
                {"completion_tokens": 20480})
    statuses = ["passed", "passed", "failed", "passed", "timeout", "passed", "error", "passed", "oom", "passed"]
    executed = [{**{k: r[k] for k in ("id", "seed_id", "instruction_id", "instruction", "response", "tests")},
                 "status": statuses[i % len(statuses)], "passed": statuses[i % len(statuses)] == "passed",
                 "exit_code": 0 if statuses[i % len(statuses)] == "passed" else 1, "duration_s": 0.05 * (i + 1),
                 "stdout": "", "stderr": "" if statuses[i % len(statuses)] == "passed" else "AssertionError",
                 "program_hash": f"h{i}"} for i, r in enumerate(responses)]
    counts = {f"status_{s}": sum(e["status"] == s for e in executed) for s in ("passed", "failed", "timeout", "oom", "error")}
    write_stage(runner, "execute", [(executed, [])], {**counts, "cache_hits": 3})
    write_stage(runner, "repair", [([{**e, "round": 0, "repaired_from": None} for e in executed], [])],
                {"instructions_unsolved": 0, "rescued": 0, "still_unsolved": 0})
    kept, dropped, seen = [], [], set()
    for e in executed:
        if not e["passed"]:
            dropped.append({"id": e["id"], "instruction": e["instruction"], "drop_reason": "not_passed"})
        elif e["instruction_id"] in seen:
            dropped.append({"id": e["id"], "instruction": e["instruction"], "drop_reason": "extra_response"})
        else:
            seen.add(e["instruction_id"])
            kept.append({**{k: e[k] for k in ("id", "seed_id", "instruction_id", "instruction", "response", "tests")},
                         "messages": [{"role": "user", "content": e["instruction"]},
                                      {"role": "assistant", "content": e["response"]}]})
    write_stage(runner, "dedup", [(kept[:-1], dropped + [{"id": kept[-1]["id"], "drop_reason": "near_duplicate",
                                                           "instruction": kept[-1]["instruction"]}])], {})
    finetune = runner.store("finetune")
    trained = [{"id": k["id"], "n_tokens": 300 + 40 * i, "n_train_tokens": min(300 + 40 * i, 512),
                "n_label_tokens": 120 + 10 * i, "status": "kept" if 300 + 40 * i <= 512 else "truncated"}
               for i, k in enumerate(kept[:-1])]
    write_stage(runner, "finetune", [(trained, [])],
                {"train_steps": 40, "final_loss": 0.4172, "mean_loss": 0.8831, "train_tokens_per_epoch": 3584},
                training={"model_dir": str(finetune.dir / "model"), "global_step": 40, "epochs": 4.0,
                          "first_loss": 2.31, "final_loss": 0.4172, "loss_png": str(finetune.dir / "loss.png")})
    (finetune.dir / "loss.png").write_bytes(tiny_png())
    problems = [f"HumanEval/{i}" for i in range(12)]
    passed = {"base": {0, 2, 5, 7}, "finetuned": {0, 1, 2, 5, 7, 9}}
    paths = {"base": "gemma-3-270m", "finetuned": str(finetune.dir / "model")}
    rows = [{"id": f"{m}-{t}", "model": m, "model_path": paths[m], "task_id": t, "prompt_format": "completion",
             "completion": f"    return sorted(set(numbers))[{i}]\n", "finish_reason": "stop",
             "status": "passed" if i in passed[m] else "failed", "passed": i in passed[m], "duration_s": 0.02,
             "stderr": "" if i in passed[m] else "AssertionError"} for m in passed for i, t in enumerate(problems)]
    results = {m: {"pass@1": round(len(p) / len(problems), 4), "passed": len(p), "total": len(problems),
                   "prompt_format": "completion", "model_path": paths[m]} for m, p in passed.items()}
    write_stage(runner, "evaluate", [(rows, [])], {}, results=results)


def build_work_dir(root: Path, corpus: Path) -> Path:
    """Run the real seeds stage on ``corpus`` under ``root`` and fill every later stage; return the recipe."""
    recipe = write_recipe(root / "recipe.yaml", root / "work", source={"kind": "local", "paths": [str(corpus)]},
                          max_seeds=12)
    result = run_cli("--config", str(recipe), "--stage", "seeds")
    assert result.returncode == 0, result.stderr
    fill_downstream(make_runner(recipe))
    return recipe


@pytest.fixture(scope="module")
def report_recipe(tmp_path_factory, stdlib_corpus) -> Path:
    """A recipe whose work dir has every stage's output."""
    return build_work_dir(tmp_path_factory.mktemp("report"), stdlib_corpus)


@pytest.fixture(scope="module")
def report_run(report_recipe):
    """``--report`` run once on the full work dir: the process result and the page."""
    result = run_cli("--config", str(report_recipe), "--report")
    page = (report_recipe.parent / "work" / "report.html").read_text()
    return result, page


# -- the page and the summary ----------------------------------------------------------------------------------------

def test_report_writes_every_section_and_prints_the_summary(report_run):
    result, page = report_run
    assert result.returncode == 0, result.stderr
    for section in SECTION_IDS:
        assert f'<section id="{section}">' in page
    out = result.stdout
    assert "stage funnel (rows out):" in out and "report: " in out and out.strip().endswith("report.html")
    assert "base" in out and "33.3%  (4/12)" in out and "50.0%  (6/12)" in out
    funnel = {line.split()[0]: line.split()[1:] for line in out.split("pass@1")[0].splitlines()[1:] if line.strip()}
    assert funnel["seeds"][0] == "done" and funnel["dedup"][0] == "done"


def test_page_is_self_contained_and_escaped(report_run):
    _, page = report_run
    assert re.findall(r'(?:src|href)="(?!data:|#)[^"]*"', page) == [] and "url(" not in page and "@import" not in page
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert 'src="data:image/png;base64,' in page and "Content-Security-Policy" in page


def test_page_content(report_run, report_recipe):
    _, page = report_run
    work = report_recipe.parent / "work"
    seeds = json.loads((work / "seeds/manifest.json").read_text())
    assert f"{seeds['rows_out']:,}" in page.split('id="funnel"')[1].split("</section>")[0]
    execution = page.split('id="execution"')[1].split("</section>")[0]
    for status in ("passed", "failed", "timeout", "oom", "error"):
        assert f">{status}<" in execution
    assert "Verdict cache: 3 of 20 samples" in execution
    drops = page.split('id="drops"')[1].split("</section>")[0]
    for reason in ("not_passed", "extra_response", "near_duplicate", "no_tests", "truncated", "unparsable"):
        assert f"<code>{reason}</code>" in drops
    evaluation = page.split('id="evaluation"')[1].split("</section>")[0]
    assert "<b>finetuned</b></td><td class=num>50.0</td>" in evaluation
    assert "+16.7 points" in evaluation and "HumanEval/1" in evaluation and "HumanEval/3" not in evaluation
    loss = page.split('id="loss"')[1].split("</section>")[0]
    assert 'id="loss-curve"' in loss and "final_loss" in loss and "global_step" in loss
    samples = page.split('id="samples"')[1]
    assert samples.count('class="sample"') == 3 * 8
    assert "[assistant]" in samples and "more character" in samples


def test_samples_are_reproducible(report_recipe):
    from pipeline.report import build_report

    runner = make_runner(report_recipe)
    first = [[r["id"] for r in v.samples] for v in build_report(runner).views]
    again = [[r["id"] for r in v.samples] for v in build_report(runner).views]
    assert first == again and all(len(ids) == 3 for ids in first if ids)


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
    (work / "concepts/manifest.json").unlink()
    views = {v.name: v for v in build_report(make_runner(report_recipe, work)).views}
    assert views["concepts"].state == "interrupted" and views["concepts"].partial
    assert views["concepts"].get("rows_out") == StageStore(work, "concepts").commit_log().rows
    assert views["concepts"].dropped == {"truncated": 1}


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
