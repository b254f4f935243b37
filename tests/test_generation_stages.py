"""The generation stages: prompt building, parsing, and real runs on a tiny random model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import yaml

from pipeline.cli import _model_config_class
from pipeline.framework.config import build_config_model, load_config
from pipeline.framework.errors import ConfigError
from pipeline.framework.runner import Runner
from pipeline.framework.stage import PlannedStage
from pipeline.framework.store import StageStore
from pipeline.generation.fewshot import DEFAULT_BANK, load_bank
from pipeline.generation.prompting import EXAMPLE_HEADER, ParseFailure
from pipeline.generation.responses import ResponseTask
from stages import PIPELINE
from stages.concepts import ConceptsTask
from stages.instructions import InstructionsStage, InstructionTask
from tests.conftest import REPO, run_cli
from tests.llm_fixtures import replay_model_section, replay_server, tiny_model_dir  # noqa: F401 - fixtures

MODEL = build_config_model({e.name: None if isinstance(e, PlannedStage) else e.Config for e in PIPELINE},
                           _model_config_class())

BANK = {
    "version": 1,
    "examples": [
        {
            "id": f"t{i}",
            "seed": f"def f{i}(x):\n    \"\"\"Return x plus {i}.\"\"\"\n    return x + {i}\n",
            "concepts": ["integer arithmetic", f"constant {i}"],
            "properties": {"category": "function", "difficulty": "easy", "language": "Python"},
            "instruction": f"Write a function add_{i}(x) that returns x plus {i}.",
            "response": f"Add the constant.\n\n```python\ndef add_{i}(x):\n    return x + {i}\n```",
            "tests": f"assert add_{i}(1) == {1 + i}\nassert add_{i}(0) == {i}",
        }
        for i in range(4)
    ],
}


@pytest.fixture()
def bank_file(tmp_path):
    path = tmp_path / "bank.yaml"
    path.write_text(yaml.safe_dump(BANK, sort_keys=False))
    return path


# -- parsers -------------------------------------------------------------------------------------------------------
WELL_FORMED_RESPONSE = (
    "We scan once.\n\n```python\ndef first(xs):\n    return xs[0]\n```\n\n"
    "### Tests\n```python\nassert first([1, 2]) == 1\nassert first('ab') == 'a'\n```\n"
)


def test_response_parser_cases():
    task = ResponseTask()
    parsed = task.read_answer(WELL_FORMED_RESPONSE)
    assert parsed == {"response": "We scan once.\n\n```python\ndef first(xs):\n    return xs[0]\n```",
                      "tests": "assert first([1, 2]) == 1\nassert first('ab') == 'a'"}
    extra = WELL_FORMED_RESPONSE + f"\n{EXAMPLE_HEADER} 9\n### Instruction\nSomething else\n### Response\nmore"
    assert task.read_answer(extra) == parsed
    assert task.read_answer("### Response\n" + WELL_FORMED_RESPONSE) == parsed, "a repeated header is cut"
    truncated = "We scan once.\n\n```python\ndef first(xs):\n    return"
    assert task.read_answer(truncated) == ParseFailure("no_tests")
    no_tests = "We scan once.\n\n```python\ndef first(xs):\n    return xs[0]\n```\n"
    assert task.read_answer(no_tests) == ParseFailure("no_tests")
    no_code = "Just use indexing.\n\n### Tests\n```python\nassert True\n```"
    assert task.read_answer(no_code) == ParseFailure("no_code")
    empty_tests = "x\n```python\npass\n```\n### Tests\n```python\n```"
    assert task.read_answer(empty_tests) == ParseFailure("no_tests")
    assert task.read_answer("") == ParseFailure("empty")
    assert task.read_answer("  \n ") == ParseFailure("empty")


def test_concepts_and_instruction_parsers():
    concepts = ConceptsTask()
    assert concepts.read_answer("- recursion\n- memoization\n- recursion\n\nThe end") == {
        "concepts": ["recursion", "memoization"]}
    assert concepts.read_answer("- a\n- b\n## Example 3\n- c") == {"concepts": ["a", "b"]}
    assert concepts.read_answer("recursion and loops") == ParseFailure("no_concepts")
    assert concepts.read_answer("") == ParseFailure("empty")
    instructions = InstructionTask()
    assert instructions.read_answer(" Write a function that reverses a list in place. \n") == {
        "instruction": "Write a function that reverses a list in place."}
    assert instructions.read_answer("Do it.") == ParseFailure("too_short")


def test_prompts_end_where_the_model_continues(bank_file):
    bank = load_bank(bank_file)
    task = ResponseTask()
    prompt = task.completion_prompt(bank.examples[:2], {"instruction": "Reverse a string."})
    assert prompt.endswith("## Example 3\n### Instruction\nReverse a string.\n### Response\n")
    assert prompt.count("### Tests") == 2 and task.stop()[0] == "\n## Example"
    messages = task.chat_messages(bank.examples[:2], {"instruction": "Reverse a string."})
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert task.read_answer(messages[2]["content"])["tests"].startswith("assert add_0(1) == 1")
    # the last turn restates the answer's format (instruct models drift from it), the examples do not
    assert messages[-1]["content"] == "### Instruction\nReverse a string.\n\n" + task.chat_reminder
    assert "### Tests" in task.chat_reminder and task.chat_reminder not in messages[1]["content"]
    # a recipe's own reminder replaces the task's; an empty one leaves the query alone
    mine = task.chat_messages(bank.examples[:1], {"instruction": "Reverse a string."}, "Three asserts.")
    assert mine[-1]["content"] == "### Instruction\nReverse a string.\n\nThree asserts."
    bare = task.chat_messages(bank.examples[:1], {"instruction": "Reverse a string."}, "")
    assert bare[-1]["content"] == "### Instruction\nReverse a string."


def test_bank_sampling_is_reproducible(bank_file):
    bank = load_bank(bank_file)
    first = [e.id for e in bank.sample(3, 42, "concepts", "row-1")]
    assert first == [e.id for e in bank.sample(3, 42, "concepts", "row-1")]
    draws = {tuple(e.id for e in bank.sample(3, 42, "concepts", f"row-{i}")) for i in range(30)}
    assert len(draws) > 3, "different rows see different examples"
    real = load_bank(DEFAULT_BANK)
    short = {e.id for i in range(40) for e in real.sample(2, 42, "responses", f"row-{i}", max_chars=1900)}
    sizes = {e.id: len(e.instruction) + len(e.response) + len(e.tests) for e in real.examples}
    assert len(short) >= 2 and all(sizes[i] <= 1900 for i in short) and len(short) < len(real.examples)
    with pytest.raises(ConfigError, match="fewshot_max_chars"):
        bank.sample(1, 42, "x", max_chars=10)


def test_categories_follow_their_weights(tmp_path):
    config = load_config(_recipe(tmp_path, None, "unused"), MODEL)
    stage = InstructionsStage(config.stages.instructions, config)
    draws = [stage.draw_properties(f"seed-{i}") for i in range(4000)]
    assert draws == [stage.draw_properties(f"seed-{i}") for i in range(4000)]
    share = Counter(c for c, _ in draws)
    assert abs(share["function"] / 4000 - 0.5) < 0.03 and abs(share["class"] / 4000 - 0.25) < 0.03
    assert set(d for _, d in draws) == {"easy", "medium", "hard"}


# -- real runs on the tiny model -------------------------------------------------------------------------------------
def _recipe(tmp_path, bank_file, model_dir, **stage_settings):
    stages = {name: {"fewshot_k": 2, "max_tokens": 24, "batch_size": 2, **stage_settings}
              for name in ("concepts", "instructions", "responses")}
    if bank_file:
        for section in stages.values():
            section["fewshot_file"] = str(bank_file)
    stages["responses"]["n"] = 2
    recipe = {
        "run": {"work_dir": str(tmp_path / "work"), "batch_size": 2},
        "model": {"backend": "transformers", "model": str(model_dir), "device": "cpu", "dtype": "float32",
                  "show_progress": False},
        "stages": stages,
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


SEEDS = [{"id": f"s{i}", "code": f"def g{i}(a):\n    \"\"\"Double a.\"\"\"\n    return a * {i}\n"} for i in range(5)]
CONCEPTS = [{"id": f"c{i}", "seed_id": f"s{i}", "concepts": ["loops", f"topic {i}"]} for i in range(3)]
INSTRUCTIONS = [{"id": f"i{i}", "seed_id": f"s{i}", "instruction": f"Write a function that returns {i} squared."}
                for i in range(3)]


@pytest.mark.parametrize("stage,rows,n", [("concepts", SEEDS, 1), ("instructions", CONCEPTS, 1),
                                          ("responses", INSTRUCTIONS, 2)])
def test_generation_stage_runs_and_counts_add_up(tmp_path, bank_file, tiny_model_dir, stage, rows, n):
    runner = Runner(load_config(_recipe(tmp_path, bank_file, tiny_model_dir), MODEL), PIPELINE)
    [manifest] = runner.run([stage], input_override=_jsonl(tmp_path / "in.jsonl", rows))
    stats = manifest["stats"]
    assert manifest["rows_in"] == stats["prompts"] == len(rows)
    assert stats["completions"] == len(rows) * n == manifest["rows_out"] + sum(manifest["dropped"].values())
    dropped = runner.store(stage).read_dropped().to_pylist()
    assert len(dropped) == sum(manifest["dropped"].values())
    assert all(d["parent_id"] in {r["id"] for r in rows} for d in dropped)
    # the same command again is done; a fresh work dir reproduces the same rows and drops
    again = Runner(load_config(_recipe(tmp_path / "again", bank_file, tiny_model_dir), MODEL), PIPELINE)
    [second] = again.run([stage], input_override=_jsonl(tmp_path / "in.jsonl", rows))
    assert second["output_digest"] == manifest["output_digest"] and second["dropped"] == manifest["dropped"]
    assert sorted(map(json.dumps, again.store(stage).read_dropped().to_pylist())) == sorted(map(json.dumps, dropped))


def _replay_recipe(tmp_path, corpus, server, work="work"):
    """seeds on two stdlib modules (the first 5 seeds; heapq's drop some), then the generation stages answered by the replay server."""
    stages = {name: {"fewshot_k": 1, "batch_size": 2} for name in ("concepts", "instructions", "responses")}
    stages["responses"]["n"] = 3
    stages["seeds"] = {"source": {"kind": "local", "paths": [str(corpus / "heapq.py"), str(corpus / "textwrap.py")]},
                       "filters": ["returns_value", "no_todo", "has_arguments"], "max_seeds": 5}
    recipe = {"run": {"work_dir": str(tmp_path / work), "batch_size": 2, "workers": 1},
              "model": replay_model_section(server), "stages": stages}
    path = tmp_path / f"{work}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_generation_stages_keep_well_formed_answers_with_their_lineage(tmp_path, stdlib_corpus, replay_server):
    """Model output comes from the replay backend (well-formed answers), served over the OpenAI API."""
    recipe = _replay_recipe(tmp_path, stdlib_corpus, replay_server)
    result = run_cli("--config", str(recipe), "--from", "seeds", "--to", "responses")
    assert result.returncode == 0, result.stderr
    read = lambda name: StageStore(tmp_path / "work", name).read_table().to_pylist()  # noqa: E731
    seeds, concepts, instructions, responses = (read(n) for n in ("seeds", "concepts", "instructions", "responses"))
    assert len(seeds) == 5
    by_seed = {s["id"]: s for s in seeds}
    assert sorted(c["seed_id"] for c in concepts) == sorted(by_seed), "one concepts row per seed"
    for c in concepts:
        assert c["seed"] == by_seed[c["seed_id"]]["code"]
        assert c["concepts"] == [f"the function {by_seed[c['seed_id']]['name']}", "early return"]
    by_concepts = {c["id"]: c for c in concepts}
    assert sorted(i["concepts_id"] for i in instructions) == sorted(by_concepts)
    for i in instructions:
        source = by_concepts[i["concepts_id"]]
        assert i["seed_id"] == source["seed_id"] and i["concepts"] == source["concepts"]
        assert i["instruction"].endswith(f"in the spirit of {by_seed[i['seed_id']]['name']}.")
        assert i["category"] in ("function", "class", "program") and i["difficulty"] in ("easy", "medium", "hard")
    by_instruction = {i["id"]: i for i in instructions}
    assert sorted((r["instruction_id"], r["sample_index"]) for r in responses) == sorted(
        (i, k) for i in by_instruction for k in range(3)), "n=3 samples per instruction, each index once"
    for r in responses:
        source = by_instruction[r["instruction_id"]]
        assert r["seed_id"] == source["seed_id"] and r["instruction"] == source["instruction"]
        func = f"double_{by_seed[r['seed_id']]['name']}"
        assert r["response"].startswith("Multiply by two.") and f"def {func}(x):" in r["response"]
        assert r["tests"] == f"assert {func}(2) == {4 if r['sample_index'] % 2 == 0 else 5}\nassert {func}(0) == 0"
    for name in ("concepts", "instructions", "responses"):
        manifest = StageStore(tmp_path / "work", name).read_manifest()
        assert manifest["dropped"] == {} and manifest["rows_out"] == manifest["stats"]["completions"], name


def test_input_can_be_a_stage_output_folder(tmp_path, stdlib_corpus, replay_server):
    """--input work/seeds reads the kept rows only (not manifest.json, _run.json, _drop_plan.json or dropped/)."""
    first = _replay_recipe(tmp_path, stdlib_corpus, replay_server)
    assert run_cli("--config", str(first), "--from", "seeds", "--to", "concepts").returncode == 0
    seeds = tmp_path / "work" / "seeds"
    assert {"manifest.json", "_run.json", "_drop_plan.json", "dropped"} <= {p.name for p in seeds.iterdir()}
    second = _replay_recipe(tmp_path, stdlib_corpus, replay_server, work="chained")
    result = run_cli("--config", str(second), "--stage", "concepts", "--input", str(seeds))
    assert result.returncode == 0, result.stderr
    chained = StageStore(tmp_path / "chained", "concepts")
    assert chained.read_manifest()["rows_in"] == StageStore(tmp_path / "work", "seeds").read_manifest()["rows_out"]
    dump = lambda s: sorted(json.dumps(r, sort_keys=True) for r in s.read_table().to_pylist())  # noqa: E731
    assert dump(chained) == dump(StageStore(tmp_path / "work", "concepts"))


def test_chat_mode_runs_on_the_chat_template(tmp_path, bank_file, tiny_model_dir):
    runner = Runner(load_config(_recipe(tmp_path, bank_file, tiny_model_dir, mode="chat"), MODEL), PIPELINE)
    [manifest] = runner.run(["concepts"], input_override=_jsonl(tmp_path / "in.jsonl", SEEDS[:2]))
    assert manifest["stats"]["completions"] == 2
    assert manifest["config"]["stage"]["mode"] == "chat"


def test_missing_model_section_is_a_clear_error(tmp_path, bank_file, tiny_model_dir):
    from pipeline.framework.errors import PipelineError

    config = load_config(_recipe(tmp_path, bank_file, tiny_model_dir), MODEL, ["model=null"])
    with pytest.raises(PipelineError, match="needs a model section"):
        Runner(config, PIPELINE).run(["concepts"], input_override=_jsonl(tmp_path / "in.jsonl", SEEDS))


def test_sigkill_mid_generation_then_rerun_equals_uninterrupted(tmp_path, bank_file, tiny_model_dir):
    rows = [{"id": f"i{i}", "seed_id": f"s{i}", "instruction": f"Write code number {i} please."} for i in range(12)]
    data = _jsonl(tmp_path / "in.jsonl", rows)
    reference = _recipe(tmp_path / "ref", bank_file, tiny_model_dir, max_tokens=48)
    killed = _recipe(tmp_path / "killed", bank_file, tiny_model_dir, max_tokens=48)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(REPO / "run_pipeline.py"), "--stage", "responses", "--input", data, "--config"]
    done = subprocess.run(command + [str(reference)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    proc = subprocess.Popen(command + [str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    store = StageStore(tmp_path / "killed/work", "responses")
    deadline = time.time() + 300
    while len(store.part_paths()) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not store.manifest_path.exists() and 2 <= len(store.part_paths()) < 6
    rerun = subprocess.run(command + [str(killed)], env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    ref_store = StageStore(tmp_path / "ref/work", "responses")
    assert ref_store.read_manifest()["output_digest"] == store.read_manifest()["output_digest"]
    dump = lambda s: sorted(json.dumps(r, sort_keys=True) for r in s.read_dropped().to_pylist())  # noqa: E731
    assert dump(store) == dump(ref_store)
    assert store.read_manifest()["dropped"] == ref_store.read_manifest()["dropped"]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_three_stages_on_the_gemma_package_model(tmp_path):
    """concepts -> instructions -> responses with the real Gemma 3 270M base model, for a handful of seeds."""
    recipe = {
        "run": {"work_dir": str(tmp_path / "work"), "batch_size": 4},
        "model": {"backend": "transformers", "model": "gemma3-270m-gguf", "device": "cpu", "batch_size": 4,
                  "show_progress": False},
        "stages": {
            "seeds": {"source": {"kind": "stdlib", "max_files": 40}, "max_seeds": 3,
                      "filters": ["returns_value", "no_todo", "no_banned_imports", "max_lines", "has_arguments"]},
            "concepts": {"fewshot_k": 2, "max_tokens": 48},
            "instructions": {"fewshot_k": 2, "max_tokens": 96},
            "responses": {"fewshot_k": 1, "max_tokens": 160, "n": 2},
        },
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    runner = Runner(load_config(path, MODEL), PIPELINE)
    runner.run(["seeds", "concepts"])
    manifests = {"concepts": runner.state("concepts").manifest}
    # feed the later stages known-good upstream rows when the small model's own ones were all dropped
    if manifests["concepts"]["rows_out"]:
        runner.run(["instructions"])
    else:
        runner.run(["instructions"], input_override=_jsonl(tmp_path / "c.jsonl", CONCEPTS[:2]))
    manifests["instructions"] = runner.state("instructions").manifest
    if manifests["instructions"]["rows_out"]:
        runner.run(["responses"])
    else:
        runner.run(["responses"], input_override=_jsonl(tmp_path / "i.jsonl", INSTRUCTIONS[:2]))
    manifests["responses"] = runner.state("responses").manifest
    for name, n in (("concepts", 1), ("instructions", 1), ("responses", 2)):
        m = manifests[name]
        assert m["stats"]["prompts"] == m["rows_in"] > 0, name
        assert m["stats"]["completions"] == n * m["rows_in"] == m["rows_out"] + sum(m["dropped"].values()), name
        assert m["config"]["model"]["model"] == "gemma3-270m-gguf"


@pytest.mark.parametrize("setting", ["model.batch_size=3", "model.show_progress=true", "model.timeout_s=5",
                                     "model.max_concurrency=2", "model.max_retries=0", "model.cache_dir=/tmp/elsewhere",
                                     "model.api_key_env=OTHER_KEY", "model.base_url=http://127.0.0.1:9999/v1",
                                     "model.gpu_memory_utilization=0.5", "model.enforce_eager=true",
                                     "model.tensor_parallel_size=2"])
def test_model_settings_that_change_no_output_keep_stages_done(tmp_path, bank_file, tiny_model_dir, setting):
    """Batch sizes, worker counts, progress bars, timeouts, retries and caches change how a stage runs, not what
    it writes: the fingerprint of every model-using stage ignores them."""
    recipe = _recipe(tmp_path, bank_file, tiny_model_dir)
    before, after = Runner(load_config(recipe, MODEL), PIPELINE), Runner(load_config(recipe, MODEL, [setting]), PIPELINE)
    for name in ("concepts", "instructions", "responses", "finetune", "evaluate"):
        assert before.fingerprint(before.stage(name)) == after.fingerprint(after.stage(name)), (name, setting)


@pytest.mark.parametrize("setting", ["model.model=other-model", "model.dtype=bfloat16", "model.tokenizer=other",
                                     "model.backend=openai"])
def test_model_settings_that_change_outputs_make_stages_stale(tmp_path, bank_file, tiny_model_dir, setting):
    recipe = _recipe(tmp_path, bank_file, tiny_model_dir)
    before, after = Runner(load_config(recipe, MODEL), PIPELINE), Runner(load_config(recipe, MODEL, [setting]), PIPELINE)
    for name in ("concepts", "responses", "finetune", "evaluate"):
        assert before.fingerprint(before.stage(name)) != after.fingerprint(after.stage(name)), (name, setting)


def test_samples_do_not_depend_on_how_rows_were_batched(tmp_path, bank_file, tiny_model_dir):
    """responses at temperature 0.7, n=2: stage batches of 1, 3 and 16 rows, model batches of 3, and two workers
    give every row the same completions, kept and dropped alike (seeds come from the row and the sample index)."""
    rows = [{"id": f"i{i}", "seed_id": f"s{i}", "instruction": f"Write function number {i}" + " carefully" * (i % 4)}
            for i in range(7)]
    data = _jsonl(tmp_path / "in.jsonl", rows)
    runs = {}
    for label, overrides in {"b1": ["stages.responses.batch_size=1"],
                             "b3": ["stages.responses.batch_size=3", "model.batch_size=3"],
                             "b16": ["stages.responses.batch_size=16", "model.batch_size=16"],
                             "w2": ["stages.responses.batch_size=3", "run.workers=2"]}.items():
        recipe = _recipe(tmp_path / label, bank_file, tiny_model_dir, temperature=0.7, max_tokens=16)
        runner = Runner(load_config(recipe, MODEL, overrides), PIPELINE)
        [manifest] = runner.run(["responses"], input_override=data)
        store = runner.store("responses")
        kept = sorted(json.dumps(r, sort_keys=True) for r in store.read_table().to_pylist())
        dropped = sorted(json.dumps(r, sort_keys=True) for r in store.read_dropped().to_pylist())
        runs[label] = (manifest["output_digest"], manifest["dropped"], kept, dropped)
        assert manifest["stats"]["completions"] == 14
    assert runs["b1"] == runs["b3"] == runs["b16"] == runs["w2"]
    texts = [json.loads(r)["completion"] for r in runs["b1"][3]] + [json.loads(r)["response"] for r in runs["b1"][2]]
    assert len(set(texts)) > 7, "samples at temperature 0.7 should differ"
