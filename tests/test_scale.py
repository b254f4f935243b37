"""Scale: shards in separate processes, and the Ray executor on a real local cluster (2 CPUs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from pipeline.cli import _model_config_class
from pipeline.framework.config import build_config_model, load_config
from pipeline.framework.runner import Runner
from pipeline.framework.stage import PlannedStage
from pipeline.framework.store import StageStore
from stages import PIPELINE
from tests.conftest import REPO, require_installed, run_cli
from tests.llm_fixtures import tiny_model_dir  # noqa: F401 - fixture

MODEL = build_config_model({e.name: None if isinstance(e, PlannedStage) else e.Config for e in PIPELINE},
                           _model_config_class())
FILTERS = ["returns_value", "no_todo", "no_banned_imports", "max_lines", "has_arguments", "not_benchmark", "near_dedup"]


def recipe(tmp_path, corpus, executor="local", **extra):
    data = {
        "run": {"work_dir": str(tmp_path / "work"), "executor": executor, "workers": 2, "batch_size": 4},
        "stages": {"seeds": {"source": {"kind": "local", "paths": [str(corpus)]}, "filters": FILTERS, "batch_size": 4}},
        **extra,
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def sorted_rows(store: StageStore, drop=()):
    return sorted((json.dumps({k: v for k, v in r.items() if k not in drop}, sort_keys=True)
                   for r in store.read_table().to_pylist()))


def test_three_shards_in_three_processes_equal_one_run(tmp_path, stdlib_corpus):
    single = recipe(tmp_path / "single", stdlib_corpus)
    assert run_cli("--config", str(single), "--stage", "seeds").returncode == 0
    sharded = recipe(tmp_path / "sharded", stdlib_corpus)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, str(REPO / "run_pipeline.py"), "--config", str(sharded), "--stage", "seeds"]
    first_two = [subprocess.Popen(base + ["--shard", f"{k}/3"], env=env, stderr=subprocess.PIPE, text=True)
                 for k in (0, 1)]
    for proc in first_two:
        assert proc.wait(timeout=600) == 0, proc.stderr.read()
    store = StageStore(tmp_path / "sharded/work", "seeds")
    assert not store.manifest_path.exists(), "two of three shards must not write the manifest"
    early = run_cli("--config", str(sharded), "--stage", "seeds", "--merge")
    assert early.returncode == 2 and "shards [2] of 3 have not finished" in early.stderr
    status = run_cli("--config", str(sharded), "--status").stdout
    assert "2 shard(s) finished" in status
    last = run_cli("--config", str(sharded), "--stage", "seeds", "--shard", "2/3")
    assert last.returncode == 0, last.stderr
    assert store.manifest_path.exists(), "the last shard to finish writes the manifest"
    reference = StageStore(tmp_path / "single/work", "seeds")
    assert sorted_rows(store) == sorted_rows(reference)
    m, ref = store.read_manifest(), reference.read_manifest()
    for key in ("rows_in", "rows_out", "dropped", "output_digest"):
        assert m[key] == ref[key], key
    assert m["dropped"].get("near_dedup", 0) > 0, "the whole-output filter ran once, over all shards"


def test_shards_refuse_what_they_cannot_do(tmp_path, stdlib_corpus):
    path = recipe(tmp_path, stdlib_corpus)
    limited = run_cli("--config", str(path), "--stage", "seeds", "--shard", "0/2", "-o", "stages.seeds.max_seeds=5")
    assert limited.returncode == 2 and "output limit" in limited.stderr
    # a valid input for dedup, so the refusal can only come from the shard check
    executed = tmp_path / "executed.jsonl"
    executed.write_text("".join(json.dumps({"id": f"r{i}", "seed_id": "s", "instruction_id": f"i{i}",
                                            "instruction": "Return one.", "response": "```python\nx = 1\n```",
                                            "tests": "assert x == 1", "passed": True}) + "\n" for i in range(3)))
    whole = run_cli("--config", str(path), "--stage", "dedup", "--shard", "0/2", "--input", str(executed))
    assert whole.returncode == 2 and "stage dedup needs its whole input at once and cannot run as shards" in whole.stderr
    assert not (tmp_path / "work" / "dedup").exists()
    bad = run_cli("--config", str(path), "--stage", "seeds", "--shard", "3/3")
    assert bad.returncode == 2 and "K must be in 0..N-1" in bad.stderr


# -- Ray ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    try:
        import ray
    except ImportError as exc:
        require_installed("Ray (the ray extra)", str(exc))
    from pipeline.framework.executors.ray_executor import connect

    connect(None, workers=2)
    yield ray
    ray.shutdown()


def _run(path, stage, overrides=(), input_override=None):
    runner = Runner(load_config(path, MODEL, overrides), PIPELINE)
    [manifest] = runner.run([stage], input_override=input_override)
    return runner, manifest


@pytest.mark.slow
def test_ray_gives_the_same_rows_as_local(tmp_path, stdlib_corpus, ray_cluster, tiny_model_dir):
    model = {"model": {"backend": "transformers", "model": str(tiny_model_dir), "device": "cpu",
                       "show_progress": False}}
    # seeds: Ray tasks
    local = recipe(tmp_path / "local", stdlib_corpus, **model)
    on_ray = recipe(tmp_path / "ray", stdlib_corpus, executor="ray", **model)
    runner_local, m_local = _run(local, "seeds")
    runner_ray, m_ray = _run(on_ray, "seeds")
    assert m_ray["output_digest"] == m_local["output_digest"] and m_ray["dropped"] == m_local["dropped"]
    # a generation stage with the tiny model: one CPU actor
    settings = ["stages.concepts.fewshot_k=2", "stages.concepts.max_tokens=16", "stages.concepts.batch_size=2"]
    _, c_local = _run(local, "concepts", settings)
    _, c_ray = _run(on_ray, "concepts", settings)
    assert c_ray["output_digest"] == c_local["output_digest"] and c_ray["dropped"] == c_local["dropped"]
    # execute: one sandbox actor per node; then dedup
    rows = [{"id": f"r{i}", "seed_id": "s", "instruction_id": f"i{i}", "instruction": f"Return {i}.",
             "response": f"```python\ndef f():\n    return {i}\n```", "tests": f"assert f() == {i if i % 3 else -1}"}
            for i in range(9)]
    data = tmp_path / "responses.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sandbox = ["stages.execute.sandbox.workers=1", "stages.execute.batch_size=3"]
    runner_le, e_local = _run(local, "execute", sandbox, str(data))
    runner_re, e_ray = _run(on_ray, "execute", sandbox, str(data))
    drop = ("duration_s",)
    assert sorted_rows(runner_re.store("execute"), drop) == sorted_rows(runner_le.store("execute"), drop)
    assert e_ray["stats"].get("status_passed") == e_local["stats"].get("status_passed") == 6
    _run(local, "repair")  # no rounds: the executed samples pass through to dedup
    _run(on_ray, "repair")
    _, d_local = _run(local, "dedup")
    _, d_ray = _run(on_ray, "dedup")
    assert d_ray["output_digest"] == d_local["output_digest"]


@pytest.mark.slow
def test_ray_worker_killed_mid_stage_is_retried(tmp_path, stdlib_corpus, ray_cluster):
    import psutil

    local = recipe(tmp_path / "local", stdlib_corpus)
    _, reference = _run(local, "seeds", ["stages.seeds.filters=[returns_value, typechecks]"])
    on_ray = recipe(tmp_path / "ray", stdlib_corpus, executor="ray")
    result: dict = {}

    def work():
        try:
            result["manifest"] = _run(on_ray, "seeds", ["stages.seeds.filters=[returns_value, typechecks]"])[1]
        except BaseException as exc:  # reported below
            result["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    store = StageStore(tmp_path / "ray/work", "seeds")
    killed = 0
    deadline = time.time() + 300
    while not killed and thread.is_alive() and time.time() < deadline:
        if store.part_paths():
            for proc in psutil.process_iter(["cmdline"]):
                if any("_run_in_task" in part for part in proc.info["cmdline"] or []):
                    os.kill(proc.pid, signal.SIGKILL)
                    killed += 1
                    break
        time.sleep(0.05)
    thread.join(timeout=600)
    assert killed, "no Ray worker was busy with a batch to kill"
    assert "error" not in result, result.get("error")
    manifest = result["manifest"]
    assert manifest["output_digest"] == reference["output_digest"] and manifest["dropped"] == reference["dropped"]
