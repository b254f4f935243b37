"""The command line as a user meets it: help, status, unbuilt stages, bad input, crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.framework.store import StageStore
from tests.conftest import REPO, run_cli, write_recipe

def error_line(stderr: str) -> str:
    """The one line the CLI prints for a user error (log lines before it are progress, not errors)."""
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


DESIGN_STAGES = ["seeds", "concepts", "instructions", "responses", "execute", "repair", "dedup", "preferences",
                 "finetune", "evaluate"]


def _recipe(tmp_path, corpus, **seeds):
    return str(write_recipe(tmp_path / "recipe.yaml", tmp_path / "work",
                            source={"kind": "local", "paths": [str(corpus)]}, **seeds))


def test_help_lists_every_stage_of_the_design():
    result = run_cli("--help")
    assert result.returncode == 0
    listing = result.stdout.split("stages, in order:")[1]
    assert [line.split()[0] for line in listing.strip().splitlines()[: len(DESIGN_STAGES)]] == DESIGN_STAGES


def test_unbuilt_stage_says_so(tmp_path, stdlib_corpus, capsys):
    """A stage listed as planned shows in --help and --status, and refuses to run with its issue number."""
    from pipeline.cli import main
    from pipeline.framework.stage import PlannedStage
    from stages import PIPELINE

    registry = [*PIPELINE, PlannedStage("humaneval_plus", "HumanEval+ on the fine-tuned model", "evaluate", 42)]
    recipe = _recipe(tmp_path, stdlib_corpus)
    with pytest.raises(SystemExit):
        main(registry, ["--help"])
    help_text = capsys.readouterr().out
    assert "humaneval_plus" in help_text and "[not built yet: issue #42]" in help_text
    assert main(registry, ["--config", recipe, "--stage", "humaneval_plus"]) == 2
    assert "stage humaneval_plus is not built yet (tracked in issue #42)" in error_line(capsys.readouterr().err)
    assert main(registry, ["--config", recipe, "--status"]) == 0
    status = capsys.readouterr().out
    assert next(line for line in status.splitlines() if line.startswith("humaneval_plus")).split()[1:3] == [
        "not", "built"]


def test_status_table_and_stage_summary(tmp_path, stdlib_corpus):
    recipe = _recipe(tmp_path, stdlib_corpus)
    result = run_cli("--config", recipe, "--stage", "seeds")
    assert result.returncode == 0, result.stderr
    assert "== seeds done:" in result.stderr and "functions_found" in result.stderr
    logs = list((tmp_path / "work/logs").glob("run-*.log"))
    assert logs and "seeds done" in logs[0].read_text()
    status = run_cli("--config", recipe, "--status")
    lines = status.stdout.splitlines()
    assert lines[0].split()[:2] == ["stage", "state"]
    seeds_line = next(line for line in lines if line.startswith("seeds"))
    manifest = json.loads((tmp_path / "work/seeds/manifest.json").read_text())
    assert seeds_line.split()[1:4] == ["done", str(manifest["rows_in"]), str(manifest["rows_out"])]
    assert next(line for line in lines if line.startswith("concepts")).split()[1] == "missing"


def test_input_path_that_does_not_exist(tmp_path, stdlib_corpus):
    result = run_cli("--config", _recipe(tmp_path, stdlib_corpus), "--stage", "seeds", "--input", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "nope: no such file or folder" in error_line(result.stderr)


def test_parquet_missing_required_column(tmp_path, stdlib_corpus):
    table = pa.table({"path": ["a.py"], "text": ["def f(x):\n    '''d'''\n    return x\n"]})
    pq.write_table(table, tmp_path / "files.parquet")
    result = run_cli("--config", _recipe(tmp_path, stdlib_corpus), "--stage", "seeds", "--input",
                     str(tmp_path / "files.parquet"))
    assert result.returncode == 2
    assert "files.parquet: missing required column(s) content for stage seeds" in error_line(result.stderr)


def test_seeds_from_a_parquet_table_of_files(tmp_path, stdlib_corpus):
    files = sorted(stdlib_corpus.glob("*.py"))[:5]
    table = pa.table({"max_stars_repo_path": [f.name for f in files], "content": [f.read_text() for f in files]})
    pq.write_table(table, tmp_path / "files.parquet")
    result = run_cli("--config", _recipe(tmp_path, stdlib_corpus), "--stage", "seeds", "--input",
                     str(tmp_path / "files.parquet"))
    assert result.returncode == 0, result.stderr
    rows = StageStore(tmp_path / "work", "seeds").read_table().to_pylist()
    assert rows and {r["path"] for r in rows} <= {f.name for f in files}


def test_corrupted_part_file_via_cli(tmp_path, stdlib_corpus):
    recipe = _recipe(tmp_path, stdlib_corpus)
    assert run_cli("--config", recipe, "--stage", "seeds").returncode == 0
    store = StageStore(tmp_path / "work", "seeds")
    store.manifest_path.unlink()
    victim = store.part_paths()[1]
    victim.write_bytes(victim.read_bytes()[:100])
    before = {p: p.read_bytes() for p in store.dir.rglob("*.parquet")}
    result = run_cli("--config", recipe, "--stage", "seeds")
    assert result.returncode == 2
    assert f"{victim.name}: corrupted part file" in error_line(result.stderr)
    assert {p: p.read_bytes() for p in store.dir.rglob("*.parquet")} == before


def _sorted_rows(store: StageStore):
    return sorted(store.read_table().to_pylist(), key=lambda r: r["id"])


def test_sigkill_mid_run_then_rerun_equals_uninterrupted(tmp_path, stdlib_corpus):
    """Kill the seeds stage (type checking on, small batches) while it writes parts; rerun; compare."""
    seeds = {"batch_size": 3, "filters": ["returns_value", "no_todo", "no_banned_imports", "max_lines",
                                          "has_arguments", "not_benchmark", "typechecks"]}
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference = _recipe(reference_dir, stdlib_corpus, **seeds)
    killed = _recipe(killed_dir, stdlib_corpus, **seeds)
    assert run_cli("--config", reference, "--stage", "seeds").returncode == 0

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "run_pipeline.py"), "--config", killed, "--stage", "seeds"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    store = StageStore(killed_dir / "work", "seeds")
    deadline = time.time() + 300
    while len(store.part_paths()) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make the corpus larger"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not store.manifest_path.exists()
    partial = len(store.part_paths())
    result = run_cli("--config", killed, "--stage", "seeds")
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr and partial >= 3
    ref_store = StageStore(reference_dir / "work", "seeds")
    assert _sorted_rows(store) == _sorted_rows(ref_store)
    ref_m, m = ref_store.read_manifest(), store.read_manifest()
    for key in ("rows_in", "rows_out", "dropped", "stats", "output_digest"):
        assert m[key] == ref_m[key], key
    assert sorted(r["id"] for r in store.read_dropped().to_pylist()) == sorted(
        r["id"] for r in ref_store.read_dropped().to_pylist())


def test_publish_dry_run_writes_data_and_card(tmp_path, stdlib_corpus):
    import datasets

    recipe = _recipe(tmp_path, stdlib_corpus)
    out = tmp_path / "publish"
    result = run_cli("--config", recipe, "--stage", "seeds", "--publish-dry-run", str(out),
                     "-o", "hub.namespace=me", "-o", "hub.prefix=demo")
    assert result.returncode == 0, result.stderr
    folder = out / "demo-seeds"
    shards = sorted((folder / "data").glob("train-*.parquet"))
    assert [s.name for s in shards] == ["train-00000-of-00001.parquet"]
    published = datasets.load_dataset("parquet", data_files=[str(s) for s in shards], split="train")
    store = StageStore(tmp_path / "work", "seeds")
    assert sorted(published["id"]) == sorted(store.read_table()["id"].to_pylist())
    card = (folder / "README.md").read_text()
    manifest = store.read_manifest()
    header = yaml.safe_load(card.split("---")[1])
    assert header["configs"][0]["data_files"][0]["path"] == "data/train-*.parquet"
    assert f"| kept | {manifest['rows_out']} |" in card
    for reason, count in manifest["dropped"].items():
        assert f"| dropped: {reason} | {count} |" in card
    assert "Upstream dataset: " in card and str(stdlib_corpus) in card
    assert "max_lines: 150" in card and "top-level Python function" in card


def test_real_publish_uploads_the_dry_run_folder(tmp_path, stdlib_corpus, monkeypatch):
    """The Hub cannot be reached here: record the two calls a real publish makes, on the same folder."""
    import huggingface_hub

    from pipeline.cli import _model_config_class
    from pipeline.framework.config import build_config_model, load_config
    from pipeline.framework.runner import Runner
    from pipeline.framework.stage import PlannedStage
    from pipeline.publishing.hub import publish
    from stages import PIPELINE

    calls = []

    class RecordingApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            files = sorted(str(p.relative_to(folder_path)) for p in folder_path.rglob("*") if p.is_file())
            calls.append(("upload_folder", repo_id, files, kwargs["repo_type"]))

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    monkeypatch.setenv("HF_TOKEN", "secret")
    recipe = _recipe(tmp_path, stdlib_corpus)
    model = build_config_model({e.name: None if isinstance(e, PlannedStage) else e.Config for e in PIPELINE},
                               _model_config_class())
    config = load_config(recipe, model, ["hub.namespace=org", "run.workers=1"])
    runner = Runner(config, PIPELINE)
    runner.run(["seeds"])
    publish(runner, ["seeds"])
    assert calls[0] == ("token", "secret")
    assert calls[1] == ("create_repo", "org/selfcodealign-seeds", {"repo_type": "dataset", "private": True,
                                                                   "exist_ok": True})
    assert calls[2] == ("upload_folder", "org/selfcodealign-seeds", ["README.md", "data/train-00000-of-00001.parquet"],
                        "dataset")
