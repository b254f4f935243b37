"""The repair stage: unsolved instructions get new attempts, run in the real Docker sandbox, until one passes.

The model is a replayed one (a model output fixture served through the real ``openai`` backend): it fixes an
attempt only when it is shown what failed, and needs two rounds to get it right.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import yaml

from pipeline.framework.store import StageStore
from tests.conftest import REPO, run_cli
from tests.llm_fixtures import FakeOpenAIServer, replay_model_section

GOOD = "```python\ndef double(x):\n    return x * 2\n```"


def answer(expected: int) -> str:
    """A response doubling a number, with tests expecting double(2) == expected (only 4 passes)."""
    return f"Multiply by two.\n\n{GOOD}\n\n### Tests\n```python\nassert double(2) == {expected}\n```\n"


class FixingBackend:
    """Answers a repair prompt from the failed attempt it shows: expecting 5 -> 6 (still wrong), 6 -> 4 (right).

    With no failed attempt shown it answers wrongly (expecting 7), so a fresh attempt never passes.
    """

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def reply(self, prompt: str) -> str:
        shown = prompt.rsplit("### Failed attempt", 1)
        if len(shown) == 1 or "Test output" not in shown[1]:
            return answer(7)
        expected = int(re.search(r"assert double\(2\) == (\d+)", shown[1]).group(1))
        return answer({5: 6, 6: 4}.get(expected, 4))

    def generate(self, prompts: list[str], params) -> list[list]:
        from pipeline.llm import Completion

        self.prompts.extend(prompts)
        return [[Completion(text=self.reply(p), finish_reason="stop") for _ in range(params.n)] for p in prompts]


def executed(instruction: str, iid: str, expectations: list[int], code: str = GOOD) -> list[dict]:
    """Executed samples of one instruction: each expecting double(2) == e, passed only when e == 4."""
    rows = []
    for k, e in enumerate(expectations):
        rows.append({"id": f"{iid}-{k}", "seed_id": "s", "instruction_id": iid, "instruction": instruction,
                     "response": f"Add it to itself.\n\n{code}", "tests": f"assert double(2) == {e}",
                     "status": "passed" if e == 4 else "failed", "passed": e == 4, "exit_code": int(e != 4),
                     "duration_s": 0.1, "stdout": "", "stderr": "" if e == 4 else "AssertionError",
                     "program_hash": f"h{iid}{k}"})
    return rows


def setup(tmp_path, server, rows, **repair) -> list[str]:
    """Input rows, a recipe with the replayed model and a small sandbox; the CLI arguments for the repair stage."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "executed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = {"rounds": 3, "fewshot_k": 0, "sandbox": {"workers": 2, "timeout_s": 5}} | repair
    recipe = {"run": {"work_dir": str(tmp_path / "work")}, "model": replay_model_section(server),
              "stages": {"repair": settings}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return ["--config", str(tmp_path / "recipe.yaml"), "--stage", "repair", "--input", str(data)]


def sample_rows() -> list[dict]:
    return (executed("Write double(x) returning twice x.", "i1", [5, 5])
            + executed("Write twice(x), the double of x, for integers.", "i2", [4, 5],
                       "```python\ndef double(x):\n    return x + x\n```"))


def test_a_failing_instruction_is_rescued_in_round_two_and_dedup_keeps_it(tmp_path):
    backend = FixingBackend()
    server = FakeOpenAIServer(backend, model_name="replay").start()
    try:
        args = setup(tmp_path, server, sample_rows())
        result = run_cli(*args)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    store = StageStore(tmp_path / "work", "repair")
    rows = store.read_table().to_pylist()
    manifest = store.read_manifest()
    assert [r["round"] for r in rows].count(0) == 4  # every executed sample passes through
    attempts = sorted((r for r in rows if r["round"] > 0), key=lambda r: r["round"])
    assert [(r["instruction_id"], r["round"], r["status"]) for r in attempts] == [("i1", 1, "failed"),
                                                                                ("i1", 2, "passed")]
    assert attempts[0]["repaired_from"] in ("i1-0", "i1-1") and attempts[1]["repaired_from"] == attempts[0]["id"]
    assert "AssertionError" in attempts[0]["stderr"]
    assert len(backend.prompts) == 2 and "### Test output\nAssertionError" in backend.prompts[0]
    stats = manifest["stats"]
    assert stats["rescued_round_1"] == 0 and stats["rescued_round_2"] == 1 and stats["rescued"] == 1
    assert stats["instructions_unsolved"] == 1 and stats["still_unsolved"] == 0 and "rescued_round_3" not in stats
    assert manifest["rows_in"] == 4 and manifest["rows_out"] == 6
    assert "rescued_round_2" in result.stderr + result.stdout  # the stage summary shows it
    # and the run's closing summary says it in words
    assert "repair: 1 of 1 unsolved instructions rescued (round 1: 0, round 2: 1; 2 attempts)" in result.stdout

    # both instructions' answers define double(); the published one-sample-per-name-set filter would keep one
    dedup = run_cli("--config", args[1], "--stage", "dedup", "-o", "stages.dedup.sanitize.unique_names=false")
    assert dedup.returncode == 0, dedup.stderr
    kept = {r["instruction_id"]: r for r in StageStore(tmp_path / "work", "dedup").read_table().to_pylist()}
    assert kept["i1"]["id"] == attempts[1]["id"] and kept["i1"]["round"] == 2 and kept["i2"]["round"] == 0


def test_a_fresh_attempt_without_feedback_is_not_shown_the_failure(tmp_path):
    backend = FixingBackend()
    server = FakeOpenAIServer(backend, model_name="replay").start()
    try:
        result = run_cli(*setup(tmp_path, server, sample_rows(), feedback=False, rounds=2))
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    store = StageStore(tmp_path / "work", "repair")
    stats = store.read_manifest()["stats"]
    assert stats["rescued"] == 0 and stats["still_unsolved"] == 1 and stats["repair_attempts"] == 2
    assert all("Failed attempt" not in p for p in backend.prompts)
    assert all(r["repaired_from"] is None for r in store.read_table().to_pylist())


def test_no_rounds_passes_the_samples_through(tmp_path):
    server = FakeOpenAIServer(FixingBackend(), model_name="replay").start()
    try:
        result = run_cli(*setup(tmp_path, server, sample_rows(), rounds=0))
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    store = StageStore(tmp_path / "work", "repair")
    assert sorted(r["id"] for r in store.read_table().to_pylist()) == sorted(r["id"] for r in sample_rows())
    assert store.read_manifest()["stats"]["instructions_unsolved"] == 1


def test_sigkill_mid_repair_then_rerun_equals_uninterrupted(tmp_path):
    """Killed while the model is being asked (the server answers slowly), the rerun writes the reference rows."""
    rows = [r for i in range(6) for r in executed(f"Write double{i}(x) returning twice x.", f"i{i}", [5, 5])]
    backend = FixingBackend()
    server = FakeOpenAIServer(backend, model_name="replay").start()
    try:
        reference = run_cli(*setup(tmp_path / "reference", server, rows))
        assert reference.returncode == 0, reference.stderr
        args = setup(tmp_path / "killed", server, rows)
        asked = len(backend.prompts)
        server.hang_s = 3.0
        proc = subprocess.Popen([sys.executable, str(REPO / "run_pipeline.py"), *args], cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        while len(backend.prompts) == asked and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        server.hang_s = 0.0
        assert not (tmp_path / "killed" / "work" / "repair" / "manifest.json").exists()
        rerun = run_cli(*args)
    finally:
        server.stop()
    assert rerun.returncode == 0, rerun.stderr
    by_id = lambda store: sorted(store.read_table().to_pylist(), key=lambda r: r["id"])  # noqa: E731
    done, ref = StageStore(tmp_path / "killed" / "work", "repair"), StageStore(tmp_path / "reference" / "work", "repair")
    drop_time = lambda rows: [{k: v for k, v in r.items() if k != "duration_s"} for r in rows]  # noqa: E731
    assert drop_time(by_id(done)) == drop_time(by_id(ref))
    assert done.read_manifest()["output_digest"] == ref.read_manifest()["output_digest"]
    assert done.read_manifest()["stats"] == ref.read_manifest()["stats"]


def test_preflight_measures_the_longest_repair_prompts_from_the_executed_samples(tmp_path):
    from stages.execute import ExecuteStage

    store = StageStore(tmp_path / "work", "execute")
    store.dir.mkdir(parents=True)
    rows = sample_rows()
    store.write_batch("a", rows, ExecuteStage.output_schema(), [], [r["id"] for r in rows])
    store.write_manifest({"stage": "execute", "fingerprint": "x", "rows_in": 4, "rows_out": 4, "output_digest": "d"})
    recipe = {"run": {"work_dir": str(tmp_path / "work")}, "stages": {"repair": {"rounds": 2}},
              "model": {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "max_model_len": 2048}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    result = run_cli("-c", str(tmp_path / "recipe.yaml"), "--preflight", "--stage", "repair")
    line = next(x for x in result.stdout.splitlines() if x.startswith("repair  prompt + max_tokens"))
    assert "3 longest failed execute rows" in line and line.split()[-1] == "FAIL"  # 1536 new tokens do not fit
    assert result.returncode != 0
