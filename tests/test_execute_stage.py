"""The execute stage against the real Docker engine: verdicts, the cache, and a missing engine."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time

import pytest
import yaml

from pipeline.execution.verdicts import build_program
from pipeline.framework.store import StageStore
from tests.conftest import run_cli

pytestmark = pytest.mark.docker

SOLUTION = "Here it is.\n\n```python\ndef square(x):\n    return x * x\n```\n"
RESPONSES = {
    "pass": (SOLUTION, "assert square(3) == 9\nassert square(-2) == 4"),
    "fail": (SOLUTION, "assert square(3) == 10"),
    "slow": ("```python\nimport time\n```", "time.sleep(30)\nassert True"),
    "early": ("```python\nimport sys\n```", "sys.exit(0)\nassert False"),
    "syntax": ("```python\ndef broken(:\n```", "assert True"),
    "twin": (SOLUTION, "assert square(3) == 9\nassert square(-2) == 4"),
}


def test_program_is_the_fenced_blocks_then_the_tests():
    response = "Intro.\n```python\nA = 1\n```\nThen more.\n```py\nB = 2\n```\n```text\nnot code\n```"
    assert build_program(response, "assert A + B == 3\n") == "A = 1\n\nB = 2\n\nassert A + B == 3\n"


def _setup(tmp_path, **sandbox):
    rows = [{"id": key, "seed_id": "s", "instruction_id": "i", "instruction": "Square a number.",
             "response": response, "tests": tests} for key, (response, tests) in RESPONSES.items()]
    data = tmp_path / "responses.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {"run": {"work_dir": str(tmp_path / "work"), "batch_size": 4},
              "stages": {"execute": {"sandbox": {"workers": 2, "timeout_s": 2, **sandbox}}}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path), str(data)


def test_every_sample_gets_its_verdict_and_reruns_execute_nothing(tmp_path):
    recipe, data = _setup(tmp_path)
    result = run_cli("--config", recipe, "--stage", "execute", "--input", data)
    assert result.returncode == 0, result.stderr
    store = StageStore(tmp_path / "work", "execute")
    status = {r["id"]: r["status"] for r in store.read_table().to_pylist()}
    assert status == {"pass": "passed", "fail": "failed", "slow": "timeout", "early": "failed",
                      "syntax": "failed", "twin": "passed"}
    manifest = store.read_manifest()
    assert manifest["rows_in"] == manifest["rows_out"] == len(RESPONSES) and manifest["dropped"] == {}
    assert manifest["stats"]["status_passed"] == 2 and manifest["stats"]["status_failed"] == 3
    assert manifest["stats"]["status_timeout"] == 1
    passed = [r for r in store.read_table().to_pylist() if r["passed"]]
    assert {r["id"] for r in passed} == {"pass", "twin"} and passed[0]["program_hash"] == passed[1]["program_hash"]

    again = run_cli("--config", recipe, "--stage", "execute", "--input", data, "--force")
    assert again.returncode == 0, again.stderr
    rerun = store.read_manifest()
    assert rerun["stats"]["cache_hits"] == len(RESPONSES), "a rerun executes no program twice"
    assert {r["id"]: r["status"] for r in store.read_table().to_pylist()} == status


def test_changed_limits_do_not_reuse_verdicts(tmp_path):
    recipe, data = _setup(tmp_path)
    assert run_cli("--config", recipe, "--stage", "execute", "--input", data).returncode == 0
    result = run_cli("--config", recipe, "--stage", "execute", "--input", data, "-o", "stages.execute.sandbox.timeout_s=3")
    assert result.returncode == 0, result.stderr
    manifest = StageStore(tmp_path / "work", "execute").read_manifest()
    # only the twin (same program as "pass", in a later batch of this very run) comes from the cache
    assert manifest["stats"].get("cache_hits", 0) == 1


def test_no_docker_engine_is_a_clear_error_before_any_work(tmp_path):
    recipe, data = _setup(tmp_path, docker_url="unix:///tmp/no-docker-here.sock")
    result = run_cli("--config", recipe, "--stage", "execute", "--input", data)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "sandbox" in errors[0] and "dockerd" in errors[0]
    assert not StageStore(tmp_path / "work", "execute").part_paths()


def test_a_sandbox_fault_is_not_cached_and_a_plain_rerun_retries_it(tmp_path):
    """Killing the container twice under a job gives status ``error`` (the sandbox's fault, not the program's):
    that verdict must not be cached, and the same command again (no --force) runs the program afresh."""
    from pipeline.cli import _model_config_class
    from pipeline.execution.verdicts import program_hash
    from pipeline.framework.config import build_config_model, load_config
    from pipeline.framework.runner import STALE, Runner
    from pipeline.framework.stage import PlannedStage
    from sandbox.container import LABEL_OWNER_PID
    from sandbox.engine import connect
    from stages import PIPELINE

    rows = [{"id": "slow-pass", "seed_id": "s", "instruction_id": "i", "instruction": "Wait, then pass.",
             "response": "```python\nimport time\n```", "tests": "time.sleep(6)\nassert True"}]
    data = tmp_path / "responses.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"run": {"work_dir": str(tmp_path / "work")},
                                      "stages": {"execute": {"sandbox": {"workers": 1, "timeout_s": 10}}}}))
    model = build_config_model({e.name: None if isinstance(e, PlannedStage) else e.Config for e in PIPELINE},
                               _model_config_class())
    runner = Runner(load_config(recipe, model), PIPELINE)
    client = connect()
    killed: list[str] = []
    finished = threading.Event()

    def kill_every_container() -> None:
        """Kill each container of this process 1.5 s after it shows up, until the run is over."""
        while not finished.is_set():
            for container in client.containers.list(filters={"label": f"{LABEL_OWNER_PID}={os.getpid()}"}):
                if container.id not in killed:
                    time.sleep(1.5)  # let the job start inside it
                    try:
                        container.kill()
                    except Exception:  # already gone
                        pass
                    killed.append(container.id)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_every_container)
    killer.start()
    try:
        runner.run(["execute"], input_override=str(data))
    finally:
        finished.set()
        killer.join()
    store = StageStore(tmp_path / "work", "execute")
    [row] = store.read_table().to_pylist()
    assert row["status"] == "error", row
    cache = tmp_path / "work" / "cache" / "verdicts.sqlite"
    with sqlite3.connect(cache) as db:
        cached = [h for (h,) in db.execute("SELECT program FROM verdicts")]
    assert program_hash(build_program(rows[0]["response"], rows[0]["tests"])) not in cached
    state = runner.state("execute")
    assert state.state == STALE and "sandbox" in state.why
    runner.run(["execute"], input_override=str(data))  # the same command, no --force
    [row] = store.read_table().to_pylist()
    assert row["status"] == "passed", row
    assert store.read_manifest()["stats"].get("cache_hits", 0) == 0


def test_two_clean_runs_give_the_same_output_digest(tmp_path):
    """Programs take a different time on every run: ``duration_s`` is not part of the output digest, so a clean
    rerun elsewhere does not make downstream stages stale."""
    digests, durations = [], []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        recipe, data = _setup(tmp_path / name)
        result = run_cli("--config", recipe, "--stage", "execute", "--input", data)
        assert result.returncode == 0, result.stderr
        store = StageStore(tmp_path / name / "work", "execute")
        digests.append(store.read_manifest()["output_digest"])
        durations.append(sorted((r["id"], r["duration_s"]) for r in store.read_table().to_pylist()))
    assert durations[0] != durations[1], "the runs took exactly the same time: the test proves nothing"
    assert digests[0] == digests[1]
