"""The execute stage against the real Docker engine: verdicts, the cache, and a missing engine."""

from __future__ import annotations

import json

import pytest
import yaml

from pipeline.execution import build_program
from pipeline.store import StageStore
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
