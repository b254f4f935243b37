"""Each published setting of the SelfCodeAlign method (issue 11, items 2a-2j): the code does it,
the paper recipe uses it, and a user can switch it off."""

from __future__ import annotations

import pytest

from pipeline.cli import _model_config_class
from pipeline.framework.config import build_config_model, load_config
from stages import PIPELINE
from tests.conftest import REPO
from tests.llm_fixtures import tiny_model_dir  # noqa: F401 - pytest fixture

PAPER = REPO / "configs" / "selfcodealign-sc2-15b.yaml"


def paper_recipe(*overrides: str):
    """The paper recipe, validated by the project's own loader."""
    model = build_config_model({s.name: s.Config for s in PIPELINE}, _model_config_class())
    return load_config(PAPER, model, overrides)


# -- a. few-shot examples per stage ------------------------------------------------------------
def test_responses_show_one_bank_example_concepts_and_instructions_eight():
    from stages.concepts import ConceptsConfig
    from stages.instructions import InstructionsConfig
    from stages.responses import ResponsesConfig

    assert ResponsesConfig().fewshot_k == 1
    assert ConceptsConfig().fewshot_k == 8 and InstructionsConfig().fewshot_k == 8
    recipe = paper_recipe()
    assert recipe.stages.responses.fewshot_k == 1
    assert recipe.stages.concepts.fewshot_k == 8 and recipe.stages.instructions.fewshot_k == 8
    assert recipe.model.max_model_len == 16384
    assert paper_recipe("stages.responses.fewshot_k=3").stages.responses.fewshot_k == 3


# -- b. sampling temperature --------------------------------------------------------------------
def test_concepts_and_instructions_sample_at_0_7():
    from stages.concepts import ConceptsConfig
    from stages.instructions import InstructionsConfig

    assert ConceptsConfig().temperature == 0.7 and InstructionsConfig().temperature == 0.7
    recipe = paper_recipe()
    assert recipe.stages.concepts.temperature == 0.7 and recipe.stages.instructions.temperature == 0.7
    assert paper_recipe("stages.concepts.temperature=0").stages.concepts.temperature == 0


# -- e. no_todo match mode ----------------------------------------------------------------------
def _seed_file(body: str) -> dict:
    return {"id": "file-1", "path": "m.py", "content": body}


def test_no_todo_is_a_substring_match_as_published_and_word_mode_stays():
    from stages.seeds import SeedsConfig, SeedsStage

    source = (
        'def debug_total(values: list[int]) -> int:\n    """Sum for debug output."""\n    return sum(values)\n\n\n'
        'def plain(values: list[int]) -> int:\n    """Sum."""\n    return sum(values)\n'
    )
    recipe = paper_recipe()
    assert recipe.stages.seeds.todo_match == "substring" and SeedsConfig().todo_match == "substring"
    published = SeedsStage(SeedsConfig(filters=["no_todo"]), recipe).process_batch([_seed_file(source)])
    assert [r["name"] for r in published.rows] == ["plain"]
    assert [r["drop_reason"] for r in published.dropped] == ["no_todo"]
    words = SeedsStage(SeedsConfig(filters=["no_todo"], todo_match="word"), recipe).process_batch([_seed_file(source)])
    assert sorted(r["name"] for r in words.rows) == ["debug_total", "plain"]


# -- h. execution limits and main blocks that read standard input -------------------------------
STDIN_MAIN = '''Here is the solution.

```python
import sys


def double(x: int) -> int:
    return 2 * x


if __name__ == "__main__":
    value = int(sys.stdin.readline())
    print(double(value))
```
'''


def test_a_main_block_reading_stdin_is_cut_and_the_tests_then_run(tmp_path):
    import subprocess
    import sys

    from pipeline.execution.verdicts import build_program
    from stages.execute import ExecuteConfig

    assert ExecuteConfig().drop_stdin_main is True
    recipe = paper_recipe()
    assert recipe.stages.execute.drop_stdin_main is True
    assert recipe.stages.execute.sandbox.memory_mb == 4096 and recipe.stages.execute.sandbox.timeout_s == 10
    program = build_program(STDIN_MAIN, "assert double(4) == 8\nprint('tests ran')", drop_stdin_main=True)
    assert "__main__" not in program and "def double" in program
    path = tmp_path / "p.py"
    path.write_text(program)
    # stdin closed: with the block kept, readline() gives "" and int("") raises before the tests.
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert done.returncode == 0 and "tests ran" in done.stdout
    kept = build_program(STDIN_MAIN, "assert double(4) == 8", drop_stdin_main=False)
    path.write_text(kept)
    assert subprocess.run([sys.executable, str(path)], stdin=subprocess.DEVNULL, capture_output=True, timeout=60).returncode != 0


def test_a_main_block_without_input_is_kept():
    from pipeline.execution.verdicts import without_stdin_main

    code = 'def f():\n    return 1\n\nif __name__ == "__main__":\n    print(f())'
    assert without_stdin_main(code) == code
    reading = 'def f():\n    return 1\n\nif "__main__" == __name__:\n    x = input()\nprint("after")'
    assert without_stdin_main(reading) == 'def f():\n    return 1\n\nprint("after")'


# -- i. the corpus ----------------------------------------------------------------------------------
def test_seeds_stream_the_stack_dedup():
    from stages.seeds import SourceConfig

    source = paper_recipe().stages.seeds.source
    assert (source.kind, source.dataset, source.data_dir) == ("hub", "bigcode/the-stack-dedup", "data/python")
    assert SourceConfig().dataset == "bigcode/the-stack-dedup"


# -- c. seeds: near-dedup and the docstring judge -------------------------------------------------
def test_paper_seeds_near_dedup_and_judge_reading_the_whole_function():
    from pipeline.generation.docstring_judge import JudgeSettings, judge_docstrings
    from tests.test_docstring_judge import ScriptedBackend

    seeds = paper_recipe().stages.seeds
    assert seeds.filters[-2:] == ["near_dedup", "docstring_judge"] and seeds.near_dedup.threshold == 0.5
    assert seeds.docstring_judge.show == "function" and JudgeSettings().show == "function"
    assert (seeds.docstring_judge.samples, seeds.docstring_judge.temperature) == (1, 0.0)  # one greedy answer
    rows = [
        {"id": "lies", "code": 'def lies(xs):\n    """Return xs sorted ascending."""\n    return sorted(xs, reverse=True)\n'},
        {"id": "tie", "code": 'def tie(x):\n    """Return x."""\n    return x\n'},
    ]
    backend = ScriptedBackend({"reverse=True": ["no", "no", "yes"], "def tie": ["yes", "no", "yes", "no"]})
    verdicts = judge_docstrings(backend, rows, JudgeSettings(samples=3, fewshot_k=2), seed=3)
    assert verdicts["lies"] is False
    assert any("return sorted(xs, reverse=True)" in p for p in backend.prompts), "the judge sees the body"
    assert judge_docstrings(backend, rows[1:], JudgeSettings(samples=4, fewshot_k=2), seed=3) == {"tie": False}
    signature_only = ScriptedBackend({"def lies": ["yes"] * 3})
    judge_docstrings(signature_only, rows[:1], JudgeSettings(show="signature", fewshot_k=2), seed=3)
    assert "reverse=True" not in signature_only.prompts[0].rsplit("## Example", 1)[-1]


# -- d. seeds type-checked as self-contained units -----------------------------------------------
UNIT_FILE = '''from typing import Optional
import json

SCALE = 3


def _helper(x: int) -> int:
    """Triple x."""
    return x * SCALE


def leans_on_file(x: int) -> int:
    """Use a helper of this file."""
    return _helper(x) + 1


def stands_alone(text: str, default: Optional[str] = None) -> str:
    """Round-trip text through JSON, or give default for empty text."""
    if not text:
        return default or ""
    return json.loads(json.dumps(text))


def wrong_alone(x: int) -> str:
    """Return x as text (but forgets to convert)."""
    return x
'''


def test_a_seed_is_typechecked_alone_with_its_imports_and_file_helpers_drop_under_their_own_reason():
    from pipeline.analysis.pysource import extract_functions
    from stages.seeds import SeedsConfig, SeedsStage

    by_name = {f.name: f for f in extract_functions(UNIT_FILE)}
    assert by_name["leans_on_file"].file_names == {"_helper"} and by_name["_helper"].file_names == {"SCALE"}
    assert by_name["stands_alone"].file_names == frozenset()
    unit = by_name["stands_alone"].standalone_source
    assert unit.startswith("from typing import Optional\nimport json\n") and "SCALE" not in unit
    recipe = paper_recipe()
    assert recipe.stages.seeds.typecheck_unit == "function" and SeedsConfig().typecheck_unit == "function"
    assert recipe.stages.seeds.filters.index("self_contained") < recipe.stages.seeds.filters.index("typechecks")
    chain = ["self_contained", "typechecks"]
    result = SeedsStage(SeedsConfig(filters=chain), recipe).process_batch([_seed_file(UNIT_FILE)])
    reasons = {r["name"]: r["drop_reason"] for r in result.dropped}
    assert reasons == {"_helper": "self_contained", "leans_on_file": "self_contained", "wrong_alone": "typechecks"}
    assert [r["name"] for r in result.rows] == ["stands_alone"]
    # Checked alone, a seed leaning on its file fails the type check itself (the name is undefined) ...
    alone = SeedsStage(SeedsConfig(filters=["typechecks"]), recipe).process_batch([_seed_file(UNIT_FILE)])
    assert {r["name"] for r in alone.rows} == {"stands_alone"}
    # ... while inside its whole file (today's check, kept as an option) it passes.
    in_file = SeedsStage(SeedsConfig(filters=["typechecks"], typecheck_unit="file"), recipe)
    assert {r["name"] for r in in_file.process_batch([_seed_file(UNIT_FILE)]).rows} == {
        "_helper", "leans_on_file", "stands_alone"}


# -- g. the final dedup as published ------------------------------------------------------------------
def _prose(seed: int) -> str:
    import random

    words = ["alpha", "bravo", "carbon", "delta", "ember", "fjord", "gamma", "harbor", "iris", "jade", "karma",
             "lumen", "mango", "nectar", "opal", "prism", "quartz", "raven", "sierra", "tundra", "umber", "vivid"]
    rng = random.Random(seed)
    return " ".join(rng.choice(words) + str(rng.randrange(1000)) for _ in range(60)) + "."


def test_final_dedup_sanitizes_and_runs_three_passes_as_published(tmp_path):
    from stages.dedup import DedupConfig
    from tests.test_dedup_stage import run_dedup, sample

    recipe = paper_recipe().stages.dedup
    assert recipe.near_dedup.num_perm == 250 == DedupConfig().near_dedup.num_perm
    assert recipe.near_dedup_passes == ["instruction", "response", "code"] == DedupConfig().near_dedup_passes
    assert recipe.sanitize.max_instruction_words == 200 and recipe.sanitize.unique_names
    assert set(recipe.sanitize.banned_phrases) == {"todo", "fixme", "your code here", "notimplemented"}
    code = "```python\ndef twice(values):\n    return [v * 2 for v in values]\n```"
    rows = [
        sample("long", "i1", name="long_fn", k=3, instruction=" ".join(["word"] * 201)),
        sample("phrase", "i2", name="phrase_fn", k=4,
               response="Negative numbers are a TODO for later.\n\n```python\ndef phrase_fn(v):\n    return v\n```"),
        sample("code1", "i3", instruction="Double every number of a list of integers and return the new list.",
               response=_prose(1) + "\n\n" + code, tests="assert twice([1]) == [2]"),
        sample("code2", "i4", instruction="Given numbers, produce a list holding each one multiplied by two.",
               response=_prose(2) + "\n\n" + code, tests="assert twice([2]) == [4]"),
        sample("names1", "i5", instruction="Count the vowels of a word, ignoring case, as an integer result.",
               response="```python\ndef solve(word):\n    return sum(ch in 'aeiou' for ch in word.lower())\n```",
               tests="assert solve('Ab') == 1"),
        sample("names2", "i6", instruction="Return the largest gap between two neighbours of a sorted list.",
               response="```python\ndef solve(xs):\n    return max(b - a for a, b in zip(xs, xs[1:]))\n```",
               tests="assert solve([1, 4]) == 3"),
    ]
    _, kept, dropped = run_dedup(tmp_path, rows)
    reason = {d["id"]: d["drop_reason"] for d in dropped}
    assert reason["long"] == "long_instruction" and reason["phrase"] == "banned_phrase"
    assert [reason.get("code1"), reason.get("code2")].count("near_duplicate_code") == 1
    assert [reason.get("names1"), reason.get("names2")].count("duplicate_names") == 1
    assert len(kept) == 2


# -- f. decontamination against MBPP and DS-1000 -------------------------------------------------------
# Fixture problems in the two benchmarks' Hub layouts, written for these tests (not the benchmarks' content).
MBPP_ROW = {
    "task_id": 9001, "text": "Write a function to interleave two lists of equal length into one list.",
    "code": "def interleave_lists(a, b):\n    merged = []\n    for x, y in zip(a, b):\n        merged.extend([x, y])\n"
            "    return merged",
    "test_list": ["assert interleave_lists([1], [2]) == [1, 2]"], "test_setup_code": "", "challenge_test_list": [],
}
DS1000_ROW = {
    "prompt": "Problem:\nI have a numpy array of shape (n, 3) and want the rows whose last column is above a "
              "threshold, in their original order.\nA:\n<code>\nimport numpy as np\n</code>\nresult = ... # put solution here",
    "reference_code": "result = arr[arr[:, -1] > threshold_value_for_rows]",
    "metadata": {"problem_id": 77, "library": "Numpy"},
    "code_context": "def test_execution(solution: str): pass",
}


def _write_fixtures(tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    mbpp = tmp_path / "mbpp.jsonl"
    mbpp.write_text(json.dumps(MBPP_ROW) + "\n")
    ds1000 = tmp_path / "ds1000.parquet"
    pq.write_table(pa.Table.from_pylist([DS1000_ROW]), ds1000)
    return mbpp, ds1000


def test_benchmark_loaders_read_local_files_in_the_hub_layouts(tmp_path):
    from pipeline.decontamination.benchmark_data import load_benchmark
    from pipeline.decontamination.index import BenchmarkIndex
    from pipeline.decontamination.sources import BenchmarkFile, benchmark_index

    mbpp, ds1000 = _write_fixtures(tmp_path)
    [m] = load_benchmark("mbpp", mbpp)
    [d] = load_benchmark("ds1000", ds1000)
    assert m.task_id == "mbpp/9001" and MBPP_ROW["code"] in m.needles
    assert d.task_id == "ds1000/77" and DS1000_ROW["reference_code"] in d.needles
    index = benchmark_index([BenchmarkFile(path=mbpp, format="mbpp"), BenchmarkFile(path=ds1000, format="ds1000")])
    assert index.contains_benchmark("# copied\n" + MBPP_ROW["code"] + "\n") == "mbpp/9001"
    assert index.contains_benchmark("x = 1\n" + DS1000_ROW["reference_code"]) == "ds1000/77"
    assert index.contains_benchmark("def unrelated(a):\n    return sorted(a, key=len, reverse=True)[:3] + [0] * 9") is None
    assert len(index) == len(BenchmarkIndex.build()) + 2


def test_benchmark_loaders_ask_the_hub_for_the_published_datasets(tmp_path, monkeypatch):
    """The Hub cannot be reached here: ``datasets.load_dataset`` is replaced by a recorder serving fixture rows."""
    import datasets

    from pipeline.decontamination.benchmark_data import load_benchmark
    from pipeline.framework.errors import ConfigError

    calls = []

    def fake_load(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_list([MBPP_ROW if "mbpp" in path else DS1000_ROW])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert len(load_benchmark("mbpp")) == 4  # one fixture row per split
    assert calls[:4] == [("google-research-datasets/mbpp", "full", s) for s in ("train", "test", "validation", "prompt")]
    assert [e.task_id for e in load_benchmark("ds1000")] == ["ds1000/77"]
    assert calls[-1] == ("xlangai/DS-1000", None, "test")

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConfigError, match="benchmark mbpp: cannot load google-research-datasets/mbpp.*format: mbpp"):
        load_benchmark("mbpp")


def test_paper_recipe_decontaminates_against_mbpp_at_seeds_and_mbpp_ds1000_at_dedup(tmp_path):
    from stages.seeds import SeedsConfig, SeedsStage

    recipe = paper_recipe()
    assert recipe.stages.seeds.benchmarks == ["mbpp"]
    assert recipe.stages.dedup.benchmarks == ["mbpp", "ds1000"]
    mbpp, _ = _write_fixtures(tmp_path)
    # the seed's docstring is the MBPP problem statement
    source = MBPP_ROW["code"].replace("(a, b):\n", f'(a, b):\n    """{MBPP_ROW["text"]}"""\n', 1) + "\n"
    config = SeedsConfig(filters=["not_benchmark"], benchmark_files=[{"path": str(mbpp), "format": "mbpp"}])
    result = SeedsStage(config, recipe).process_batch([_seed_file(source)])
    assert [r["drop_reason"] for r in result.dropped] == ["not_benchmark"]
    assert not SeedsStage(SeedsConfig(filters=["not_benchmark"]), recipe).process_batch([_seed_file(source)]).dropped


# -- j. fine-tuning in the released prompt format, without gradient clipping ---------------------------
def test_finetune_uses_the_released_starcoder2_instruct_format_and_no_clipping(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from pipeline.training.data import IGNORE, ConversationEncoder
    from pipeline.training.formats import STARCODER2_INSTRUCT_SYSTEM
    from pipeline.training.trainers import training_arguments
    from stages.finetune import FinetuneConfig, FinetuneStage

    recipe = paper_recipe()
    assert recipe.stages.finetune.chat_format == "starcoder2-instruct"
    assert recipe.stages.finetune.max_grad_norm is None and FinetuneConfig().max_grad_norm is None
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    encoder = ConversationEncoder(tokenizer, "starcoder2-instruct")
    messages = [{"role": "user", "content": "Add two numbers."}, {"role": "assistant", "content": "def add(a, b): ..."}]
    bos = tokenizer.bos_token or tokenizer.eos_token
    expected = (f"{bos}{STARCODER2_INSTRUCT_SYSTEM}\n\n### Instruction\nAdd two numbers.\n\n"
                f"### Response\ndef add(a, b): ...{tokenizer.eos_token}")
    assert encoder.text(messages) == expected
    assert tokenizer.apply_chat_template(messages, tokenize=False) == expected
    encoded = encoder.encode(messages, max_length=512)
    answer = [t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE]
    assert tokenizer.decode(answer) == "def add(a, b): ..." + tokenizer.eos_token
    recipe.run.work_dir = tmp_path
    stage = FinetuneStage(FinetuneConfig(), recipe)
    assert training_arguments(stage.config, tmp_path, False, False, stage.seed).max_grad_norm == 0.0
    clipped = FinetuneStage(FinetuneConfig(max_grad_norm=1.0), recipe)
    assert training_arguments(clipped.config, tmp_path, False, False, clipped.seed).max_grad_norm == 1.0
