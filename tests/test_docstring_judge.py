"""The docstring judge: prompt, parsing, the majority rule, and a run in the seeds stage through the command line."""

from __future__ import annotations

import yaml

from pipeline.framework.store import StageStore
from pipeline.generation.docstring_judge import (
    DocstringJudgeTask, JudgeSettings, SignatureJudgeTask, judge_docstrings, signature_and_docstring,
)
from pipeline.generation.fewshot import DEFAULT_JUDGE_BANK, load_judge_bank
from pipeline.generation.prompting import ParseFailure
from pipeline.llm import Backend, Completion
from tests.conftest import run_cli, write_recipe
from tests.llm_fixtures import judge_says_yes, replay_model_section, replay_server  # noqa: F401 - fixture
from tests.llm_fixtures import _openai_server_session, openai_server, tiny_backend, tiny_model_dir  # noqa: F401

CODE = 'def double(x):\n    """Return twice x."""\n    y = x * 2\n    return y\n'


class ScriptedBackend(Backend):
    """Answers every prompt with the same scripted samples (model output fixtures for the majority rule)."""

    def __init__(self, answers_by_marker: dict[str, list[str]]):
        self.answers = answers_by_marker
        self.prompts: list[str] = []

    def generate(self, prompts, params, seeds=None):
        self.prompts.extend(prompts)
        out = []
        for prompt in prompts:
            marker = next(m for m in self.answers if m in prompt.rsplit("## Example", 1)[-1])
            out.append([Completion(text=t, finish_reason="stop") for t in self.answers[marker][: params.n]])
        return out

    def generate_chat(self, conversations, params, seeds=None):
        raise AssertionError("not used")


def test_bank_and_prompt():
    bank = load_judge_bank(DEFAULT_JUDGE_BANK)
    assert {e.verdict for e in bank.examples} == {"yes", "no"}
    assert signature_and_docstring(CODE) == 'def double(x):\n    """Return twice x."""'
    task = SignatureJudgeTask()
    prompt = task.completion_prompt(bank.examples[:2], {"code": CODE})
    assert prompt.endswith('### Function\n```python\ndef double(x):\n    """Return twice x."""\n```\n'
                           "### Enough to re-implement\n")
    assert "y = x * 2" not in prompt
    assert "return max(low" not in prompt, "the examples are cut to their signature and docstring too"
    whole = DocstringJudgeTask().completion_prompt(bank.examples[:2], {"code": CODE})
    assert "y = x * 2" in whole and whole.endswith("### Docstring describes the code\n")
    assert task.read_answer(" Yes.") == {"yes": True} and task.read_answer("no") == {"yes": False}
    assert task.read_answer("maybe") == ParseFailure("unclear")


def test_majority_rule_ties_and_unclear_count_as_no():
    rows = [{"id": name, "code": f'def {name}(x):\n    """Doc of {name}."""\n    return x\n'}
            for name in ("clear", "tie", "fuzzy", "against")]
    backend = ScriptedBackend({
        "def clear": ["yes", "yes", "no"],
        "def tie": ["yes", "no", "yes", "no"],
        "def fuzzy": ["yes", "perhaps", "hmm"],
        "def against": ["no", "no", "yes"],
    })
    three = judge_docstrings(backend, rows, JudgeSettings(samples=3, fewshot_k=2), seed=1)
    assert three == {"clear": True, "tie": True, "fuzzy": False, "against": False}
    four = judge_docstrings(backend, rows[:2], JudgeSettings(samples=4, fewshot_k=2), seed=1)
    assert four == {"clear": True, "tie": False}, "2 yes of 4 is a tie: no"


def test_judge_in_the_seeds_stage_drops_exactly_the_no_verdicts(tmp_path, stdlib_corpus, replay_server):
    """The model's verdicts come from the replay backend over the OpenAI API: yes for even-length names."""
    recipe = write_recipe(tmp_path / "recipe.yaml", tmp_path / "work",
                          source={"kind": "local", "paths": [str(stdlib_corpus / "textwrap.py"),
                                                             str(stdlib_corpus / "heapq.py")]},
                          filters=["returns_value", "docstring_judge"],
                          docstring_judge={"samples": 3, "fewshot_k": 2})
    data = yaml.safe_load(recipe.read_text())
    data["model"] = replay_model_section(replay_server)
    recipe.write_text(yaml.safe_dump(data))
    result = run_cli("--config", str(recipe), "--stage", "seeds")
    assert result.returncode == 0, result.stderr
    store = StageStore(tmp_path / "work", "seeds")
    kept = {r["name"] for r in store.read_table().to_pylist()}
    judged_out = {r["name"] for r in store.read_dropped().to_pylist() if r["drop_reason"] == "docstring_judge"}
    assert kept and judged_out, "the judge must keep some seeds and drop others"
    assert all(judge_says_yes(name) for name in kept) and not any(judge_says_yes(name) for name in judged_out)
    manifest = store.read_manifest()
    assert manifest["dropped"]["docstring_judge"] == len(judged_out) and manifest["rows_out"] == len(kept)
    assert "model" in manifest["config"], "the judge's model is part of the stage's config and fingerprint"


def test_each_function_is_judged_with_its_own_seed_whatever_the_batch(openai_server):
    """The judge's answers for a function are sampled with a seed from the run seed and that function's id, so
    judging it alone or among others asks the server the very same thing."""
    from pipeline.llm import LLMConfig, create_backend

    rows = [{"id": f"f{i}", "code": CODE.replace("double", f"double{i}")} for i in range(5)]
    asked = []
    for batch_size in (1, 3, 16):
        openai_server.reset()
        config = LLMConfig(backend="openai", model=openai_server.model_name, base_url=openai_server.base_url,
                           show_progress=False)
        with create_backend(config) as client:
            judge_docstrings(client, rows, JudgeSettings(samples=2, fewshot_k=1, batch_size=batch_size), seed=7)
        asked.append(sorted((req["prompt"], req["seed"]) for req in openai_server.seen))
    assert asked[0] == asked[1] == asked[2]
    assert len({seed for _, seed in asked[0]}) == len(rows)
