"""The evaluate stage: prompt formats and answer reading, scoring in the real sandbox, and whole runs.

Model output comes from a replay backend (canonical HumanEval solutions, or
empty bodies) for exact expectations, and from the tiny random model through
the transformers backend for an honest end-to-end run. Nothing of Docker is mocked.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import yaml
from pydantic import Field

from pipeline.cli import _model_config_class
from pipeline.config import StageConfig, build_config_model, load_config
from pipeline.errors import ConfigError, PipelineError
from pipeline.execution import SandboxSession
from pipeline.humaneval import (
    CHAT_INSTRUCTION,
    ProblemSource,
    assemble_program,
    chat_messages,
    chat_solution,
    completion_prompt,
    humaneval_problems,
    pass_at_1,
    score,
    select_problems,
    solution,
    truncate_completion,
)
from pipeline.llm import Backend, Completion
from pipeline.map_runner import manifest_fields
from pipeline.runner import DONE, STALE, Runner
from pipeline.stage import WholeStage
from sandbox import SandboxConfig
from stages.evaluate import EvaluateConfig, EvaluateStage
from tests.conftest import run_cli
from tests.llm_fixtures import tiny_model_dir  # noqa: F401 - a fixture

PROBLEMS = humaneval_problems()
BY_ID = {p["task_id"]: p for p in PROBLEMS}
CANONICAL = {p["task_id"]: p["canonical_solution"] for p in PROBLEMS}
EMPTY = {p["task_id"]: "    pass\n" for p in PROBLEMS}


# -- prompt formats and answer reading (no model, no sandbox) -----------------------
def test_completion_format_is_the_prompt_and_stops_at_the_next_top_level_statement():
    problem = BY_ID["HumanEval/0"]
    assert completion_prompt(problem) == problem["prompt"]
    body = "    return sorted(numbers)[0] < threshold\n"
    for tail in ("\ndef helper():\n", "\nclass A:\n", "\nif __name__ == '__main__':\n", "\nprint(1)\n", "\n# test\n",
                 "\nassert f(1)\n", "\n```\n"):
        assert truncate_completion(body + tail) == body
    assert truncate_completion("    # inner comment\n    return 1\n") == "    # inner comment\n    return 1\n"
    assert solution(problem, body + "\ndef other():\n", "completion") == problem["prompt"] + body


def test_chat_format_asks_for_the_function_in_a_fenced_block():
    problem = BY_ID["HumanEval/2"]
    [turn] = chat_messages(problem)
    assert turn["role"] == "user"
    assert turn["content"] == f"{CHAT_INSTRUCTION}\n\n```python\n{problem['prompt'].rstrip()}\n```"


def test_chat_reply_defining_the_entry_point_gets_the_prompts_imports_and_missing_helpers():
    problem = BY_ID["HumanEval/10"]  # make_palindrome, whose prompt defines is_palindrome and nothing to import
    reply = ("Sure.\n```python\ndef make_palindrome(string: str) -> str:\n    return string\n```\n"
             "### Tests\n```python\nassert make_palindrome('') == ''\n```")
    code = chat_solution(problem, reply)
    assert code.startswith("def is_palindrome(string: str) -> bool:")
    assert code.rstrip().endswith("def make_palindrome(string: str) -> str:\n    return string")
    assert "assert make_palindrome" not in code, "only the block defining the entry point is taken"
    typed = BY_ID["HumanEval/0"]  # has "from typing import List"
    own = "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```"
    assert chat_solution(typed, own).startswith("from typing import List\n\ndef has_close_elements(")
    helper_too = "```python\ndef is_palindrome(s):\n    return True\n\ndef make_palindrome(s):\n    return s\n```"
    assert "return string == string[::-1]" not in chat_solution(problem, helper_too), "the reply's own helper wins"


def test_chat_reply_without_the_entry_point_is_appended_to_the_prompt_as_a_body():
    problem = BY_ID["HumanEval/2"]
    assert chat_solution(problem, "```python\n    return number % 1.0\n```") == problem["prompt"] + "    return number % 1.0"
    assert chat_solution(problem, "```py\nreturn number % 1.0\n```") == problem["prompt"] + "    return number % 1.0"
    assert chat_solution(problem, "return number % 1.0") == problem["prompt"] + "    return number % 1.0"


def test_program_is_solution_tests_then_check():
    problem = BY_ID["HumanEval/2"]
    program = assemble_program(problem, "CODE")
    assert program == f"CODE\n{problem['test']}\ncheck(truncate_number)\n"


def test_subset_selection_and_unknown_ids():
    assert [p["task_id"] for p in select_problems(PROBLEMS, limit=3)] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    picked = select_problems(PROBLEMS, task_ids=["HumanEval/7", "HumanEval/3", "HumanEval/9"], limit=2)
    assert [p["task_id"] for p in picked] == ["HumanEval/3", "HumanEval/7"]
    with pytest.raises(PipelineError, match="HumanEval/999"):
        select_problems(PROBLEMS, task_ids=["HumanEval/999"])


def test_config_needs_something_to_evaluate():
    with pytest.raises(ValueError, match="nothing to evaluate"):
        EvaluateConfig(evaluate_base=False, evaluate_finetuned=False)
    assert EvaluateConfig(limit=20).max_tokens == 512


def test_pass_at_1_counts():
    assert pass_at_1([{"passed": True}, {"passed": False}, {"passed": True}, {"passed": False}]) == {
        "pass@1": 0.5, "passed": 2, "total": 4}
    assert pass_at_1([]) == {"pass@1": 0.0, "passed": 0, "total": 0}


# -- scoring in the real sandbox -----------------------------------------------------
@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """One sandbox session (pool + verdict cache) for the scoring tests."""
    with SandboxSession(SandboxConfig(workers=2), tmp_path_factory.mktemp("work")) as opened:
        yield opened


@pytest.mark.docker
def test_canonical_solutions_score_164_and_empty_bodies_0(session):
    results = score(PROBLEMS, CANONICAL, session)
    assert pass_at_1(results) == {"pass@1": 1.0, "passed": 164, "total": 164}, [r.task_id for r in results if not r.passed]
    empty = score(PROBLEMS, EMPTY, session)
    assert pass_at_1(empty) == {"pass@1": 0.0, "passed": 0, "total": 164}
    assert {r.status for r in empty} == {"failed"}
    again = score(PROBLEMS[:20], CANONICAL, session)
    assert all(r.cached for r in again), "a program already judged is not run again"


@pytest.mark.docker
def test_canonical_solutions_score_164_through_the_chat_format(session):
    whole = {t: f"Here you go.\n```python\n{BY_ID[t]['prompt']}{s}```\n" for t, s in CANONICAL.items()}
    assert pass_at_1(score(PROBLEMS, whole, session, "chat"))["passed"] == 164
    body = {t: f"```python\n{s}```" for t, s in CANONICAL.items()}
    assert pass_at_1(score(PROBLEMS, body, session, "chat"))["passed"] == 164


@pytest.mark.docker
def test_an_answer_that_exits_before_the_tests_does_not_pass(session):
    problem = BY_ID["HumanEval/2"]
    sneaky = {problem["task_id"]: "    return 0\nimport sys\nsys.exit(0)\n"}
    [result] = score([problem], sneaky, session)
    assert not result.passed


# -- whole runs of the stage ----------------------------------------------------------
class ReplayBackend(Backend):
    """Answers HumanEval prompts from a table instead of a model: the model-output fixture of these tests."""

    def __init__(self, answers: dict[str, str], fail_after: int | None = None):
        self.answers = answers
        self.fail_after = fail_after
        self.seen: list[str] = []

    def _answer(self, prompt_text: str) -> str:
        problem = next(p for p in PROBLEMS if p["prompt"].rstrip() in prompt_text)
        if self.fail_after is not None and len(self.seen) >= self.fail_after:
            raise PipelineError("replay backend: simulated crash")
        self.seen.append(problem["task_id"])
        return self.answers[problem["task_id"]]

    def generate(self, prompts, params, seeds=None):
        return [[Completion(text=self._answer(p), finish_reason="stop")] for p in prompts]

    def generate_chat(self, conversations, params, seeds=None):
        return [[Completion(text=f"```python\n{self._answer(c[-1]['content'])}```", finish_reason="stop")]
                for c in conversations]


class ReplayEvaluate(EvaluateStage):
    """The evaluate stage with the replay backend: empty bodies for the base model, canonical ones fine-tuned."""

    backends: list[ReplayBackend] = []
    fail_after: int | None = None

    def open_backend(self, llm_config):
        answers = CANONICAL if llm_config.model != "base-model" else EMPTY
        backend = ReplayBackend(answers, ReplayEvaluate.fail_after)
        ReplayEvaluate.backends.append(backend)
        return backend


class FakeFinetuneConfig(StageConfig):
    """Where the stand-in finetune stage says its model is."""

    model_dir: str = Field(default="", description="The model directory to report.")


class FakeFinetune(WholeStage):
    """A stand-in for the finetune stage: one row naming a model directory, and model_dir in its manifest."""

    name = "finetune"
    title = "Stand-in finetune"
    upstream = None
    Config = FakeFinetuneConfig
    output_columns = {"id": (pa.string(), "id"), "model_dir": (pa.string(), "the model")}

    def input_source(self, ctx, override):
        return ProblemSource([], "none", "nothing")

    def run(self, ctx):
        row = {"id": "model", "model_dir": self.config.model_dir}
        ctx.store.write_batch("model", [row], self.output_schema(), [], ["model"])
        return {**manifest_fields(ctx.store.commit_log()), "model_dir": self.config.model_dir}


def make_runner(tmp_path, evaluate_stage, model: str, model_dir: str, **evaluate) -> Runner:
    """A runner over the stand-in finetune stage and ``evaluate_stage``, with a small recipe."""
    recipe = {
        "run": {"work_dir": str(tmp_path / "work"), "batch_size": 4},
        "model": {"backend": "transformers", "model": model, "device": "cpu", "dtype": "float32",
                  "show_progress": False},
        "stages": {"finetune": {"model_dir": model_dir},
                   "evaluate": {"batch_size": 4, "sandbox": {"workers": 2}, **evaluate}},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    config_model = build_config_model({"finetune": FakeFinetuneConfig, "evaluate": EvaluateConfig},
                                      _model_config_class())
    return Runner(load_config(path, config_model), [FakeFinetune, evaluate_stage])


@pytest.mark.docker
def test_stage_end_to_end_with_replayed_answers(tmp_path):
    model_dir = tmp_path / "ft-model"
    model_dir.mkdir()
    runner = make_runner(tmp_path, ReplayEvaluate, "base-model", str(model_dir), limit=10)
    with pytest.raises(PipelineError, match="finetune.*(missing|run it first)"):
        runner.run(["evaluate"])
    [_, manifest] = runner.run(["finetune", "evaluate"])
    assert manifest["results"]["base"] == {"pass@1": 0.0, "passed": 0, "total": 10, "prompt_format": "completion",
                                           "model_path": "base-model"}
    assert manifest["results"]["finetuned"] == {"pass@1": 1.0, "passed": 10, "total": 10, "prompt_format": "chat",
                                                "model_path": str(model_dir)}
    assert manifest["stats"]["base_passed"] == 0 and manifest["stats"]["finetuned_passed"] == 10
    assert manifest["stats"]["base_total"] == manifest["stats"]["finetuned_total"] == 10
    assert manifest["rows_out"] == 20 and manifest["parts"] == 6  # batches of 4: 3 parts per model
    rows = runner.store("evaluate").read_table().to_pylist()
    assert {(r["model"], r["prompt_format"]) for r in rows} == {("base", "completion"), ("finetuned", "chat")}
    first = next(r for r in rows if r["model"] == "finetuned" and r["task_id"] == "HumanEval/0")
    assert first["status"] == "passed" and first["program"].endswith("check(has_close_elements)\n")
    assert set(first) == set(EvaluateStage.output_columns)
    saved = json.loads((tmp_path / "work" / "evaluate" / "manifest.json").read_text())
    assert saved["results"] == manifest["results"]

    assert runner.state("evaluate").state == DONE
    runner.run(["finetune"], force=True)
    assert runner.state("evaluate").state == STALE, "a retrained model (same rows, new manifest) makes it stale"
    runner.run(["evaluate"])
    other = tmp_path / "other-model"
    other.mkdir()
    changed = make_runner(tmp_path, ReplayEvaluate, "base-model", str(other), limit=10)
    changed.run(["finetune"], force=True)
    assert changed.state("evaluate").state == STALE, "a new fine-tuned model makes the evaluation stale"
    [manifest] = changed.run(["evaluate"])
    assert manifest["results"]["finetuned"]["model_path"] == str(other)
    assert manifest["stats"]["cache_hits"] == 20, "verdicts come from the cache: same programs as before"
    assert changed.state("evaluate").state == DONE


@pytest.mark.docker
def test_interrupted_evaluation_resumes_without_asking_again(tmp_path):
    model_dir = tmp_path / "ft-model"
    model_dir.mkdir()
    runner = make_runner(tmp_path, ReplayEvaluate, "base-model", str(model_dir), limit=10, evaluate_base=False)
    runner.run(["finetune"])
    ReplayEvaluate.backends, ReplayEvaluate.fail_after = [], 6
    try:
        with pytest.raises(PipelineError, match="simulated crash"):
            runner.run(["evaluate"])
    finally:
        ReplayEvaluate.fail_after = None
    assert len(runner.store("evaluate").part_paths()) == 1  # the first batch of 4 was committed
    ReplayEvaluate.backends = []
    [manifest] = runner.run(["evaluate"])
    assert len(ReplayEvaluate.backends[0].seen) == 6, "only the problems not committed are asked again"
    assert manifest["results"]["finetuned"]["passed"] == 10 and "base" not in manifest["results"]


@pytest.mark.docker
def test_tiny_model_base_and_finetuned_end_to_end(tmp_path, tiny_model_dir):  # noqa: F811 - fixture
    runner = make_runner(tmp_path, EvaluateStage, str(tiny_model_dir), str(tiny_model_dir), limit=3, max_tokens=24)
    [_, manifest] = runner.run(["finetune", "evaluate"])
    for label, fmt in (("base", "completion"), ("finetuned", "chat")):
        assert manifest["results"][label]["total"] == 3 and manifest["results"][label]["prompt_format"] == fmt
        assert manifest["results"][label]["passed"] == 0, "a random model solves nothing"
    rows = runner.store("evaluate").read_table().to_pylist()
    assert len(rows) == 6 and all(r["completion"] for r in rows)
    assert all(r["status"] in ("failed", "timeout") for r in rows)


@pytest.mark.docker
def test_cli_base_only_with_input_and_no_finetune(tmp_path, tiny_model_dir):  # noqa: F811 - fixture
    recipe = {
        "run": {"work_dir": str(tmp_path / "work")},
        "model": {"backend": "transformers", "model": str(tiny_model_dir), "device": "cpu", "dtype": "float32"},
        "stages": {"evaluate": {"limit": 3, "max_tokens": 16, "sandbox": {"workers": 2}}},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    refused = run_cli("--config", str(path), "--stage", "evaluate", "--input", "humaneval")
    assert refused.returncode == 2 and "evaluate_finetuned is on but stage finetune has not finished" in refused.stderr
    result = run_cli("--config", str(path), "--stage", "evaluate", "--input", "humaneval",
                     "-o", "stages.evaluate.evaluate_finetuned=false")
    assert result.returncode == 0, result.stderr
    assert "pass@1" in result.stderr and "base" in result.stderr
    manifest = json.loads((tmp_path / "work" / "evaluate" / "manifest.json").read_text())
    assert manifest["results"] == {"base": {"pass@1": 0.0, "passed": 0, "total": 3, "prompt_format": "completion",
                                            "model_path": str(tiny_model_dir)}}


def test_base_overrides_change_the_base_model_only(tmp_path):
    """base_overrides: the base model on another engine than the generation stages (as the CPU demo does)."""
    runner = make_runner(tmp_path, EvaluateStage, "served-name", str(tmp_path), evaluate_finetuned=False,
                         base_overrides={"backend": "openai", "base_url": "http://127.0.0.1:1/v1"})
    stage = runner.stage("evaluate")
    [base] = stage.contenders(ctx=None)
    assert (base.llm_config.backend, base.llm_config.base_url, base.model_path) == (
        "openai", "http://127.0.0.1:1/v1", "served-name")
    assert stage.model_config.backend == "transformers"
    bad = make_runner(tmp_path, EvaluateStage, "m", str(tmp_path), evaluate_finetuned=False,
                      base_overrides={"backend": "no-such-engine"})
    with pytest.raises(PipelineError, match=r"^stages\.evaluate\.base_overrides: "):
        bad.stage("evaluate").contenders(ctx=None)


def test_bad_config_is_one_line(tmp_path):
    config_model = build_config_model({"evaluate": EvaluateConfig}, _model_config_class())
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"run": {"work_dir": str(tmp_path)},
                                    "stages": {"evaluate": {"evaluate_base": False, "evaluate_finetuned": False}}}))
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        load_config(path, config_model)


@pytest.mark.slow
@pytest.mark.docker
def test_after_the_real_finetune_stage_and_stale_when_retrained(tmp_path, tiny_model_dir):  # noqa: F811 - fixture
    conversations = tmp_path / "conversations.jsonl"
    conversations.write_text("".join(json.dumps({"id": f"c{i}", "messages": [
        {"role": "user", "content": f"Write a function that adds {i}."},
        {"role": "assistant", "content": f"```python\ndef add{i}(x):\n    return x + {i}\n```"}]}) + "\n"
        for i in range(4)))
    recipe = {
        "run": {"work_dir": str(tmp_path / "work")},
        "model": {"backend": "transformers", "model": str(tiny_model_dir), "device": "cpu", "dtype": "float32",
                  "show_progress": False},
        "stages": {"finetune": {"max_steps": 1, "gradient_accumulation_steps": 1, "bf16": False},
                   "evaluate": {"limit": 2, "max_tokens": 16, "sandbox": {"workers": 2}}},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    finetune = run_cli("--config", str(path), "--stage", "finetune", "--input", str(conversations))
    assert finetune.returncode == 0, finetune.stderr
    evaluate = run_cli("--config", str(path), "--stage", "evaluate")
    assert evaluate.returncode == 0, evaluate.stderr
    manifest = json.loads((tmp_path / "work" / "evaluate" / "manifest.json").read_text())
    trained = json.loads((tmp_path / "work" / "finetune" / "manifest.json").read_text())["model_dir"]
    assert manifest["results"]["finetuned"]["model_path"] == trained
    assert {m: r["total"] for m, r in manifest["results"].items()} == {"base": 2, "finetuned": 2}
    assert run_cli("--config", str(path), "--stage", "finetune", "--input", str(conversations), "--force").returncode == 0
    status = run_cli("--config", str(path), "--status").stdout
    assert next(line for line in status.splitlines() if line.startswith("evaluate")).split()[1] == "stale"
