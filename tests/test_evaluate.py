"""The evaluate stage: prompt formats and answer reading, scoring in the real sandbox, and whole runs.

Model output comes from a replay backend (canonical HumanEval solutions, or
empty bodies) for exact expectations, and from the tiny random model through
the transformers backend for an honest end-to-end run. Nothing of Docker is mocked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from pydantic import Field

from pipeline.benchmarks.answers import (
    CHAT_INSTRUCTION,
    assemble_program,
    chat_messages,
    chat_solution,
    completion_prompt,
    solution,
    truncate_completion,
)
from pipeline.benchmarks.catalog import load_benchmark
from pipeline.benchmarks.catalog import humaneval_records
from pipeline.benchmarks.contenders import Contender
from pipeline.benchmarks.harness import Answer, Harness
from pipeline.benchmarks.judge import OUTCOMES, combine, parse_verdict
from pipeline.benchmarks.source import BenchmarkSource
from pipeline.cli import _model_config_class
from pipeline.execution.verdicts import SandboxSession
from pipeline.framework.config import StageConfig, build_config_model, load_config
from pipeline.framework.errors import ConfigError, PipelineError
from pipeline.framework.runner import DONE, STALE, Runner
from pipeline.framework.stage import WholeStage
from pipeline.llm import Backend, Completion
from sandbox import SandboxConfig
from stages.evaluate import EvaluateConfig, EvaluateStage
from tests.conftest import run_cli
from tests.llm_fixtures import openai_server, _openai_server_session, tiny_backend, tiny_model_dir  # noqa: F401

HUMANEVAL = load_benchmark("humaneval")
HUMANEVAL_RECORDS = {r["task_id"]: r for r in humaneval_records()}
PROBLEMS = HUMANEVAL.problems
BY_ID = HUMANEVAL.by_id()
CANONICAL = {p.task_id: p.reference[len(p.prompt):] for p in PROBLEMS}
EMPTY = {p.task_id: "    pass\n" for p in PROBLEMS}


def answers(table: dict[str, str], form: str = "completion") -> list[Answer]:
    """Answers from ``{task_id: text}``."""
    return [Answer(task, text, form) for task, text in table.items()]


def passed(scored) -> int:
    """How many scored answers pass."""
    return sum(s.passed for s in scored)


# -- prompt formats and answer reading (no model, no sandbox) -----------------------
def test_completion_format_is_the_prompt_and_stops_at_the_next_top_level_statement():
    problem = BY_ID["HumanEval/0"]
    assert completion_prompt(problem) == problem.prompt
    body = "    return sorted(numbers)[0] < threshold\n"
    for tail in ("\ndef helper():\n", "\nclass A:\n", "\nif __name__ == '__main__':\n", "\nprint(1)\n", "\n# test\n",
                 "\nassert f(1)\n", "\n```\n"):
        assert truncate_completion(body + tail) == body
    assert truncate_completion("    # inner comment\n    return 1\n") == "    # inner comment\n    return 1\n"
    assert solution(problem, body + "\ndef other():\n", "completion") == problem.prompt + body


def test_chat_format_asks_for_the_function_in_a_fenced_block():
    problem = BY_ID["HumanEval/2"]
    [turn] = chat_messages(problem)
    assert turn["role"] == "user"
    assert turn["content"] == f"{CHAT_INSTRUCTION}\n\n```python\n{problem.prompt.rstrip()}\n```"


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
    assert chat_solution(problem, "```python\n    return number % 1.0\n```") == problem.prompt + "    return number % 1.0"
    assert chat_solution(problem, "```py\nreturn number % 1.0\n```") == problem.prompt + "    return number % 1.0"
    assert chat_solution(problem, "return number % 1.0") == problem.prompt + "    return number % 1.0"


def test_program_is_solution_tests_then_check():
    problem = BY_ID["HumanEval/2"]
    program = assemble_program("CODE", problem.suites["base"])
    assert program == f"CODE\n{HUMANEVAL_RECORDS['HumanEval/2']['test']}\ncheck(truncate_number)\n"


def test_config_needs_something_to_evaluate():
    with pytest.raises(ValueError, match="nothing to evaluate"):
        EvaluateConfig(evaluate_base=False, evaluate_finetuned=False)
    with pytest.raises(ValueError, match="greedy"):
        EvaluateConfig(samples=5)
    assert EvaluateConfig(limit=20).max_tokens == 512
    assert [e.model for e in EvaluateConfig(evaluate_base=False).entries()] == ["finetuned"]


def test_base_and_finetuned_overrides_apply_to_their_entries_and_entry_settings_win():
    cfg = EvaluateConfig(base_overrides={"backend": "transformers", "device": "cpu"},
                         finetuned_overrides={"backend": "openai"},
                         models=[{"model": "base"}, {"model": "finetuned", "settings": {"backend": "vllm"}},
                                 {"model": "/models/other"}])
    assert [e.settings for e in cfg.entries()] == [{"backend": "transformers", "device": "cpu"},
                                                   {"backend": "vllm"}, {}]
    defaults = EvaluateConfig(base_overrides={"backend": "transformers"}).entries()
    assert [(e.model, e.settings) for e in defaults] == [("base", {"backend": "transformers"}), ("finetuned", {})]


def test_sampling_seeds_are_per_problem_never_per_batch(tmp_path):
    """Each problem samples with its own seed (run seed, model, benchmark, task), whatever it is batched with."""
    from types import SimpleNamespace

    def stage(seed: int) -> EvaluateStage:
        run = SimpleNamespace(run=SimpleNamespace(seed=seed, work_dir=str(tmp_path)), model=None)
        return EvaluateStage(EvaluateConfig(greedy=False, samples=3), run)

    base, other = Contender("base", None, "m", "completion"), Contender("other", None, "m", "completion")
    tasks = [p.task_id for p in PROBLEMS[:4]]
    seeds = [stage(1).row_seed(base, "humaneval", t) for t in tasks]
    assert len(set(seeds)) == 4 and seeds == [stage(1).row_seed(base, "humaneval", t) for t in tasks]
    assert stage(1).row_seed(other, "humaneval", tasks[0]) != seeds[0]
    assert stage(1).row_seed(base, "mbpp", tasks[0]) != seeds[0]
    assert stage(2).row_seed(base, "humaneval", tasks[0]) != seeds[0]
    params = stage(1).sampling([])
    assert params.seed is None and params.n == 3, "no batch-wide seed: the seeds go per prompt"


def test_judge_verdicts_and_both_orders():
    assert parse_verdict("Answer 2 handles the empty list.\nVerdict: 2") == "2"
    assert parse_verdict("verdict: 1 ... on second thought\n**Verdict:** tie") == "tie"
    assert parse_verdict("Both are fine.") is None
    assert combine("2", "1") == "win" and combine("1", "2") == "loss"
    assert combine("1", "1") == "tie", "a judge that always picks the first position cancels out"
    assert combine("2", "tie") == "tie" and combine(None, "1") == "invalid"
    assert set(OUTCOMES) == {"win", "tie", "loss", "invalid"}


# -- scoring in the real sandbox -----------------------------------------------------
@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """One sandbox session (pool + verdict cache) for the scoring tests."""
    with SandboxSession(SandboxConfig(workers=2), tmp_path_factory.mktemp("work")) as opened:
        yield opened


@pytest.mark.docker
def test_canonical_solutions_score_164_and_empty_bodies_0(session):
    harness = Harness(session)
    assert passed(harness.score(HUMANEVAL, answers(CANONICAL))) == 164
    empty = harness.score(HUMANEVAL, answers(EMPTY))
    assert passed(empty) == 0 and {s.suites["base"].status for s in empty} == {"failed"}
    again = harness.score(HUMANEVAL.select(limit=20), answers(CANONICAL))
    assert all(s.suites["base"].cached for s in again), "a program already judged is not run again"


@pytest.mark.docker
def test_canonical_solutions_score_164_through_the_chat_format(session):
    harness = Harness(session)
    whole = {t: f"Here you go.\n```python\n{BY_ID[t].prompt}{s}```\n" for t, s in CANONICAL.items()}
    assert passed(harness.score(HUMANEVAL, answers(whole, "chat"))) == 164
    body = {t: f"```python\n{s}```" for t, s in CANONICAL.items()}
    assert passed(harness.score(HUMANEVAL, answers(body, "chat"))) == 164


@pytest.mark.docker
def test_an_answer_that_exits_before_the_tests_does_not_pass(session):
    sneaky = {"HumanEval/2": "    return 0\nimport sys\nsys.exit(0)\n"}
    [result] = Harness(session).score(HUMANEVAL, answers(sneaky))
    assert not result.passed


# -- whole runs of the stage ----------------------------------------------------------
class ReplayBackend(Backend):
    """Answers HumanEval prompts from a table instead of a model: the model-output fixture of these tests.

    Any other prompt (a judge request) gets ``request_answer``.
    """

    def __init__(self, answers: dict[str, str], request_answer: str, fail_after: int | None = None):
        self.answers = answers
        self.request_answer = request_answer
        self.fail_after = fail_after
        self.seen: list[str] = []
        self.seeds: dict[str, int | None] = {}  # the sampling seed each problem was asked with

    def _answer(self, prompt_text: str) -> str:
        problem = next((p for p in PROBLEMS if p.prompt.rstrip() in prompt_text), None)
        if problem is None:
            return self.request_answer
        if self.fail_after is not None and len(self.seen) >= self.fail_after:
            raise PipelineError("replay backend: simulated crash")
        self.seen.append(problem.task_id)
        return self.answers[problem.task_id]

    def _seeded(self, texts, seeds) -> None:
        found = [next((p.task_id for p in PROBLEMS if p.prompt.rstrip() in t), None) for t in texts]
        self.seeds.update({task: seed for task, seed in zip(found, seeds or [None] * len(texts)) if task})

    def generate(self, prompts, params, seeds=None):
        self._seeded(prompts, seeds)
        return [[Completion(text=self._answer(p), finish_reason="stop")] for p in prompts]

    def generate_chat(self, conversations, params, seeds=None):
        self._seeded([c[-1]["content"] for c in conversations], seeds)
        return [[Completion(text=f"```python\n{self._answer(c[-1]['content'])}```", finish_reason="stop")]
                for c in conversations]


class ScriptedJudge(Backend):
    """A judge with a fixed script (it stands for a strong remote model): prefers the answer with a def.

    With ``position_bias`` it always picks Answer 1, whatever the answers say.
    """

    def __init__(self, position_bias: bool = False):
        self.position_bias = position_bias
        self.asked: list[list[dict]] = []

    def generate(self, prompts, params):
        raise AssertionError("the judge is asked through its chat template")

    def generate_chat(self, conversations, params):
        self.asked += conversations
        replies = []
        for conversation in conversations:
            text = conversation[-1]["content"]
            first = text.split("## Answer 1\n", 1)[1].split("## Answer 2\n", 1)[0]
            pick = "1" if self.position_bias or "def " in first else "2"
            replies.append([Completion(text=f"Answer {pick} has working code.\nVerdict: {pick}", finish_reason="stop")])
        return replies


class ReplayEvaluate(EvaluateStage):
    """The evaluate stage with the replay backend: empty bodies for the base model, canonical ones fine-tuned."""

    backends: list = []
    fail_after: int | None = None
    judge: ScriptedJudge | None = None

    def open_backend(self, llm_config):
        if llm_config.model == "scripted-judge":
            ReplayEvaluate.judge = ScriptedJudge(position_bias=llm_config.tokenizer == "biased")
            return ReplayEvaluate.judge
        if llm_config.model == "base-model":
            backend = ReplayBackend(EMPTY, "I am not sure.", ReplayEvaluate.fail_after)
        else:
            backend = ReplayBackend(CANONICAL, "def answer():\n    return 42\n", ReplayEvaluate.fail_after)
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
        return BenchmarkSource([], "none", "nothing")

    def run(self, ctx):
        row = {"id": "model", "model_dir": self.config.model_dir}
        ctx.store.write_batch("model", [row], self.output_schema(), [], ["model"])
        return {**ctx.store.commit_log().manifest_fields(), "model_dir": self.config.model_dir}


def make_runner(tmp_path, evaluate_stage, model: str, model_dir: str, work: str = "work", model_batch: int = 8,
                **evaluate) -> Runner:
    """A runner over the stand-in finetune stage and ``evaluate_stage``, with a small recipe."""
    recipe = {
        "run": {"work_dir": str(tmp_path / work), "batch_size": 4},
        "model": {"backend": "transformers", "model": model, "device": "cpu", "dtype": "float32",
                  "show_progress": False, "batch_size": model_batch},
        "stages": {"finetune": {"model_dir": model_dir},
                   "evaluate": {"batch_size": 4, "sandbox": {"workers": 2}, **evaluate}},
    }
    path = tmp_path / f"{work}.yaml"
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
    results = manifest["results"]["humaneval"]
    assert results["base"] == {"base": {"pass@1": 0.0, "passed": 0, "total": 10}}
    assert results["finetuned"] == {"base": {"pass@1": 1.0, "passed": 10, "total": 10}}
    assert manifest["models"] == {"base": {"model_path": "base-model", "prompt_format": "completion"},
                                  "finetuned": {"model_path": str(model_dir), "prompt_format": "chat"}}
    assert manifest["flipped"]["humaneval"] == {"from": "base", "to": "finetuned", "lost": [],
                                                "gained": sorted(f"HumanEval/{i}" for i in range(10))}
    assert manifest["stats"]["base_humaneval_passed"] == 0 and manifest["stats"]["finetuned_humaneval_passed"] == 10
    assert manifest["rows_out"] == 20 and manifest["parts"] == 6  # batches of 4: 3 parts per model
    rows = runner.store("evaluate").read_table().to_pylist()
    assert {(r["model"], r["prompt_format"]) for r in rows} == {("base", "completion"), ("finetuned", "chat")}
    first = next(r for r in rows if r["model"] == "finetuned" and r["task_id"] == "HumanEval/0")
    assert first["status"] == "passed" and first["program"].endswith("check(has_close_elements)\n")
    assert first["time_limit_s"] >= 4.0 and first["plus_passed"] is None
    assert set(first) == set(EvaluateStage.output_columns)
    stage = runner.stage("evaluate")
    for backend, label in zip(ReplayEvaluate.backends[-2:], ("base", "finetuned")):
        contender = Contender(label, None, "", "")
        assert backend.seeds == {f"HumanEval/{i}": stage.row_seed(contender, "humaneval", f"HumanEval/{i}")
                                 for i in range(10)}, "one seed per problem, whatever its batch"
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
    assert manifest["models"]["finetuned"]["model_path"] == str(other)
    assert manifest["stats"]["cache_hits"] == 20, "verdicts come from the cache: same programs as before"
    assert changed.state("evaluate").state == DONE


@pytest.mark.docker
def test_plus_benchmarks_report_base_and_plus_scores(tmp_path):
    fixture = Path(__file__).parent / "fixtures" / "benchmarks" / "humanevalplus_format.jsonl"
    runner = make_runner(tmp_path, ReplayEvaluate, "base-model", "", evaluate_finetuned=False,
                         benchmarks=["humaneval", f"fixture+={fixture}"], limit=2)
    [manifest] = runner.run(["evaluate"], input_override=f"humaneval,fixture+={fixture}")
    assert manifest["results"]["fixture+"]["base"] == {"base": {"pass@1": 0.0, "passed": 0, "total": 2},
                                                       "plus": {"pass@1": 0.0, "passed": 0, "total": 2}}
    assert manifest["results"]["humaneval"]["base"]["base"]["total"] == 2
    rows = runner.store("evaluate").read_table().to_pylist()
    assert {r["plus_status"] for r in rows if r["benchmark"] == "fixture+"} == {"failed"}


@pytest.mark.docker
def test_judged_comparison_asks_both_orders(tmp_path):
    model_dir = tmp_path / "ft-model"
    model_dir.mkdir()
    judge = {"enabled": True, "judge": {"model": "scripted-judge"}}
    runner = make_runner(tmp_path, ReplayEvaluate, "base-model", str(model_dir), limit=2, judge=judge)
    [_, manifest] = runner.run(["finetune", "evaluate"])
    assert manifest["judge"] == {"win": 8, "tie": 0, "loss": 0, "invalid": 0, "first": "base", "second": "finetuned",
                                 "judge_model": "scripted-judge", "rows": "judge.jsonl"}
    asked = ReplayEvaluate.judge.asked
    assert len(asked) == 16 and asked[0][0]["content"].startswith("You are reviewing two answers")
    first_order, swapped = asked[0][1]["content"], asked[1][1]["content"]
    assert first_order.index("I am not sure.") < first_order.index("def answer()"), "base first, then fine-tune"
    assert swapped.index("def answer()") < swapped.index("I am not sure."), "then the other way round"
    rows = [json.loads(line) for line in (tmp_path / "work" / "evaluate" / "judge.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and rows[0]["verdict_in_order"] == "2" and rows[0]["verdict_swapped"] == "1"
    assert rows[0]["reply_in_order"].startswith("Answer 2 has working code") and rows[0]["outcome"] == "win"

    biased = make_runner(tmp_path, ReplayEvaluate, "base-model", str(model_dir), work="biased", limit=2,
                         judge={**judge, "judge": {"model": "scripted-judge", "tokenizer": "biased"}})
    [_, manifest] = biased.run(["finetune", "evaluate"])
    assert (manifest["judge"]["win"], manifest["judge"]["tie"]) == (0, 8), "a position-biased judge cancels out"


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
    assert manifest["results"]["humaneval"] == {"finetuned": {"base": {"pass@1": 1.0, "passed": 10, "total": 10}}}


@pytest.mark.docker
def test_tiny_model_greedy_results_are_identical_across_reruns_and_batch_sizes(tmp_path, tiny_model_dir):  # noqa: F811
    outcomes = []
    for work, batch, model_batch in (("a", 4, 8), ("b", 1, 1), ("c", 3, 2)):
        runner = make_runner(tmp_path, EvaluateStage, str(tiny_model_dir), str(tiny_model_dir), work=work,
                             model_batch=model_batch, limit=5, max_tokens=24, batch_size=batch)
        [_, manifest] = runner.run(["finetune", "evaluate"])
        rows = runner.store("evaluate").read_table().to_pylist()
        outcomes.append(sorted((r["model"], r["task_id"], r["completion"], r["status"]) for r in rows))
        if work == "a":
            [again] = runner.run(["evaluate"], force=True)
            rerun = runner.store("evaluate").read_table().to_pylist()
            assert sorted((r["model"], r["task_id"], r["completion"], r["status"]) for r in rerun) == outcomes[0]
            assert again["results"] == manifest["results"]
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert len(outcomes[0]) == 10 and all(o[2] for o in outcomes[0])
    assert {o[3] for o in outcomes[0]} <= {"failed", "timeout"}, "a random model solves nothing"


@pytest.mark.docker
def test_cli_three_models_side_by_side_without_finetune(tmp_path, tiny_model_dir, openai_server):  # noqa: F811
    """Three models in one run: a directory (completion), the same directory as chat, an OpenAI-compatible endpoint."""
    recipe = {
        "run": {"work_dir": str(tmp_path / "work")},
        "model": {"backend": "transformers", "model": str(tiny_model_dir), "device": "cpu", "dtype": "float32"},
        "stages": {"evaluate": {"limit": 2, "max_tokens": 12, "sandbox": {"workers": 2}, "models": [
            {"model": "base"},
            {"model": str(tiny_model_dir), "label": "tiny-chat", "prompt_format": "chat"},
            {"model": "tiny-test-model", "label": "endpoint",
             "settings": {"backend": "openai", "base_url": openai_server.base_url, "max_retries": 0}},
        ]}},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = run_cli("--config", str(path), "--stage", "evaluate", "--input", "humaneval")
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stderr.splitlines() if "benchmark" in line and "endpoint" in line)
    assert header.split()[-4:] == ["benchmark", "base", "tiny-chat", "endpoint"]
    assert any("humaneval" in line and "0.0 (0/2)" in line for line in result.stderr.splitlines())
    manifest = json.loads((tmp_path / "work" / "evaluate" / "manifest.json").read_text())
    assert manifest["models"] == {
        "base": {"model_path": str(tiny_model_dir), "prompt_format": "completion"},
        "tiny-chat": {"model_path": str(tiny_model_dir), "prompt_format": "chat"},
        "endpoint": {"model_path": "tiny-test-model", "prompt_format": "chat"},
    }
    assert set(manifest["results"]["humaneval"]) == {"base", "tiny-chat", "endpoint"}
    assert manifest["flipped"]["humaneval"]["from"] == "base" and manifest["flipped"]["humaneval"]["to"] == "tiny-chat"


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
    assert refused.returncode == 2 and "a model is 'finetuned' but stage finetune has not finished" in refused.stderr
    result = run_cli("--config", str(path), "--stage", "evaluate", "--input", "humaneval",
                     "-o", "stages.evaluate.evaluate_finetuned=false")
    assert result.returncode == 0, result.stderr
    assert "pass@1" in result.stderr and "base" in result.stderr
    manifest = json.loads((tmp_path / "work" / "evaluate" / "manifest.json").read_text())
    assert manifest["results"] == {"humaneval": {"base": {"base": {"pass@1": 0.0, "passed": 0, "total": 3}}}}


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
    with pytest.raises(PipelineError, match=r"^stages\.evaluate\.models \(base\): backend"):
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
    assert manifest["models"]["finetuned"]["model_path"] == trained
    assert {m: r["base"]["total"] for m, r in manifest["results"]["humaneval"].items()} == {"base": 2, "finetuned": 2}
    assert run_cli("--config", str(path), "--stage", "finetune", "--input", str(conversations), "--force").returncode == 0
    status = run_cli("--config", str(path), "--status").stdout
    assert next(line for line in status.splitlines() if line.startswith("evaluate")).split()[1] == "stale"


class RealJudgeEvaluate(ReplayEvaluate):
    """Replayed contenders, and a real judge: the small local model through the transformers backend."""

    def open_backend(self, llm_config):
        if llm_config.model == "gemma3-270m-gguf":
            return EvaluateStage.open_backend(self, llm_config)
        return super().open_backend(llm_config)


@pytest.mark.slow
@pytest.mark.docker
def test_judged_comparison_with_the_small_local_model_as_judge(tmp_path):
    """Gemma 3 270M (PyPI package, a base model: plain-text judge prompts) judges two requests through the real
    transformers backend, in both orders."""
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps({"id": f"r{i}", "request": text}) + "\n" for i, text in enumerate(
        ["Write a Python function that returns the larger of two numbers.", "Reverse a string in Python."])))
    model_dir = tmp_path / "ft-model"
    model_dir.mkdir()
    judge = {"enabled": True, "requests": str(requests), "judge_max_tokens": 40, "prompt_format": "completion",
             "judge": {"model": "gemma3-270m-gguf", "batch_size": 4}}
    runner = make_runner(tmp_path, RealJudgeEvaluate, "base-model", str(model_dir), limit=1, judge=judge)
    [_, manifest] = runner.run(["finetune", "evaluate"])
    tally = {k: manifest["judge"][k] for k in OUTCOMES}
    assert sum(tally.values()) == 2 and manifest["judge"]["judge_model"] == "gemma3-270m-gguf"
    rows = [json.loads(line) for line in (tmp_path / "work" / "evaluate" / "judge.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["r0", "r1"]
    assert all(r["reply_in_order"].strip() and r["reply_swapped"].strip() for r in rows), "the judge answered"
    assert all(r["outcome"] in OUTCOMES for r in rows)
    assert all(r["first_answer"] == "I am not sure." and "def answer" in r["second_answer"] for r in rows)
