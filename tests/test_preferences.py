"""The preferences stage on planted executed samples: who is paired, why the rest is left out, and that trl trains on it."""

from __future__ import annotations

import math
import random

import pytest

from pipeline.framework.store import StageStore
from tests.conftest import run_cli, run_stage_on_rows, sigkill_after_parts, stage_command
from tests.llm_fixtures import tiny_model_dir  # noqa: F401 - pytest fixture


def sample(sid: str, iid: str, status: str, k: int = 3) -> dict:
    """One executed sample answering instruction ``iid`` with verdict ``status``."""
    return {"id": sid, "seed_id": "s-" + iid, "instruction_id": iid,
            "instruction": f"Write times_{iid}(x) returning x times {k}.",
            "response": f"```python\ndef times_{iid}(x):\n    return x * {k if status == 'passed' else k + 1}\n```",
            "tests": f"assert times_{iid}(2) == {2 * k}", "status": status, "passed": status == "passed",
            "stdout": "", "stderr": "AssertionError" if status == "failed" else ""}


def planted() -> list[dict]:
    return [
        sample("a1", "i1", "passed"), sample("a2", "i1", "failed"), sample("a3", "i1", "failed"),   # one pair, a spare
        sample("b1", "i2", "passed"), sample("b2", "i2", "passed"),                                 # nothing failed
        sample("c1", "i3", "failed"), sample("c2", "i3", "timeout"),                                # nothing passed
        sample("d1", "i4", "passed"), sample("d2", "i4", "error"), sample("d3", "i4", "timeout"),  # error is no verdict
    ]


def run_preferences(tmp_path, rows, seed=42, **settings):
    return run_stage_on_rows(tmp_path, "preferences", rows, seed, **settings)


def test_pairs_a_passing_with_a_failing_answer_and_says_why_the_rest_is_left_out(tmp_path):
    manifest, pairs, dropped = run_preferences(tmp_path, planted())
    assert sorted(p["instruction_id"] for p in pairs) == ["i1", "i4"]
    by_instruction = {p["instruction_id"]: p for p in pairs}
    i1 = by_instruction["i1"]
    assert i1["chosen_id"] == "a1" and i1["rejected_id"] in ("a2", "a3")
    assert i1["chosen_status"] == "passed" and i1["rejected_status"] == "failed"
    assert i1["rejected_error"] == "AssertionError"
    assert i1["prompt"] == [{"role": "user", "content": "Write times_i1(x) returning x times 3."}]
    assert i1["chosen"][0]["role"] == "assistant" and "x * 3" in i1["chosen"][0]["content"]
    assert "x * 4" in i1["rejected"][0]["content"] and "### Tests" in i1["rejected"][0]["content"]
    assert by_instruction["i4"]["rejected_id"] == "d3"  # the sandbox error is never a rejected answer
    reason = {d["id"]: d["drop_reason"] for d in dropped}
    assert reason == {({"a2", "a3"} - {i1["rejected_id"]}).pop(): "pair_limit", "b1": "no_failing_sample",
                      "b2": "no_failing_sample", "c1": "no_passing_sample", "c2": "no_passing_sample",
                      "d2": "status_error"}
    assert manifest["rows_in"] == 10 and manifest["rows_out"] == 2
    assert manifest["stats"]["instructions"] == 4 and manifest["stats"]["instructions_paired"] == 2


def test_more_pairs_per_instruction_never_repeat_and_ignore_input_order(tmp_path):
    rows = [sample(f"p{i}", "i1", "passed") for i in range(2)] + [sample(f"f{i}", "i1", "failed") for i in range(3)]
    _, pairs, dropped = run_preferences(tmp_path / "a", rows, pairs_per_instruction=4)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    _, again, _ = run_preferences(tmp_path / "b", shuffled, pairs_per_instruction=4)
    combos = [(p["chosen_id"], p["rejected_id"]) for p in pairs]
    assert len(set(combos)) == 4 and sorted(combos) == sorted((p["chosen_id"], p["rejected_id"]) for p in again)
    assert {c for c, _ in combos} == {"p0", "p1"} and {r for _, r in combos} == {"f0", "f1", "f2"}
    assert dropped == []


def test_pairs_load_with_datasets_and_trl_dpo_trains_on_them(tmp_path, tiny_model_dir):  # noqa: F811
    """trl's own DPOTrainer, on the tiny random model, a few steps on the stage's Parquet output."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    rows = [sample(f"{i}-{s}", f"i{i}", s, k=i + 2) for i in range(4) for s in ("passed", "failed")]
    run_preferences(tmp_path, rows)
    parts = sorted(str(p) for p in (tmp_path / "work" / "preferences").glob("part-*.parquet"))
    data = datasets.load_dataset("parquet", data_files=parts, split="train")
    assert len(data) == 4 and {"prompt", "chosen", "rejected"} <= set(data.column_names)

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=3, per_device_train_batch_size=2,
                     learning_rate=1e-2, logging_steps=1, report_to="none", use_cpu=True, save_strategy="no",
                     max_length=256)
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_equals_uninterrupted(tmp_path):
    """40k samples make four parts; the stage is killed once one is written, and the rerun matches a clean run."""
    rows = [sample(f"{i}-{j}", f"i{i}", "passed" if j == 0 else "failed") for i in range(13_334) for j in range(3)]
    reference_manifest, reference, reference_dropped = run_preferences(tmp_path / "reference", rows)
    args = stage_command(tmp_path / "killed", "preferences", rows)
    store = StageStore(tmp_path / "killed" / "work", "preferences")
    assert sigkill_after_parts(args, store, parts=1) >= 1
    assert run_cli(*args).returncode == 0
    by_id = lambda rows: sorted(rows, key=lambda r: r["id"])  # noqa: E731
    assert by_id(store.read_table().to_pylist()) == by_id(reference)
    assert by_id(store.read_dropped().to_pylist()) == by_id(reference_dropped)
    manifest = store.read_manifest()
    for key in ("rows_in", "rows_out", "dropped", "stats", "output_digest"):
        assert manifest[key] == reference_manifest[key], key


def test_pairs_publish_with_a_card_that_says_how_they_were_made(tmp_path):
    import datasets

    run_preferences(tmp_path, planted())
    out = tmp_path / "publish"
    args = stage_command(tmp_path, "preferences", planted())
    result = run_cli(*args, "--publish-dry-run", str(out), "-o", "hub.namespace=me", "-o", "hub.prefix=demo")
    assert result.returncode == 0, result.stderr
    shards = sorted(str(s) for s in (out / "demo-preferences" / "data").glob("train-*.parquet"))
    published = datasets.load_dataset("parquet", data_files=shards, split="train")
    assert sorted(published["instruction_id"]) == ["i1", "i4"] and published[0]["chosen"][0]["role"] == "assistant"
    card = (out / "demo-preferences" / "README.md").read_text()
    assert "| kept | 2 |" in card and "| dropped: no_passing_sample | 2 |" in card
    assert "passing answer as ``chosen``" in card or "passing sample" in card
