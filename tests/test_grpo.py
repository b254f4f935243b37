"""GRPO with the sandbox as reward: the reward on planted answers, and trl's GRPOTrainer on the tiny model."""

from __future__ import annotations

import pytest

from pipeline.training.rewards import SandboxReward, split_test_cases
from sandbox import SandboxConfig
from tests.llm_fixtures import tiny_model_dir  # noqa: F401 - pytest fixture

TESTS = "import math\nassert add(1, 2) == 3\nassert add(0, 0) == 0\nassert add(-1, 1) == 0\nassert add(2, 2) == 5"


def fenced(code: str) -> list[dict]:
    """A conversational completion holding ``code`` in a fenced block."""
    return [{"role": "assistant", "content": f"Here.\n\n```python\n{code}\n```"}]


def test_each_assert_is_a_case_after_the_statements_before_it():
    cases = split_test_cases(TESTS)
    assert len(cases) == 4 and cases[0] == "import math\nassert add(1, 2) == 3"
    assert cases[3].startswith("import math\n") and split_test_cases("not python (") == ["not python ("]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from pipeline.execution.verdicts import SandboxSession

    opened = SandboxSession(SandboxConfig(workers=2, timeout_s=3), tmp_path_factory.mktemp("work")).open()
    yield opened
    opened.close()


def test_reward_is_the_share_of_the_kept_tests_passed_and_hollow_answers_get_zero(session):
    reward = SandboxReward(session)
    completions = [
        fenced("def add(a, b):\n    return a + b"),              # 3 of 4 (the last test is wrong on purpose)
        fenced("def add(a, b):\n    return a * b + (a != b)"),   # add(1,2)=3, add(0,0)=0, add(-1,1)=0, add(2,2)=4
        fenced("def add(a, b):\n    pass"),                      # hollow
        fenced("import sys\nsys.exit(0)\ndef add(a, b):\n    return a + b"),  # exits before any assert runs
        fenced("def add(a, b):\n    while True:\n        pass"),  # times out
        [{"role": "assistant", "content": "I would add them."}],  # no code at all
    ]
    rewards = reward(prompts=[None] * 6, completions=completions, tests=[TESTS] * 6)
    assert rewards == [0.75, 0.75, 0.0, 0.0, 0.0, 0.0]


def test_grpo_trains_the_tiny_model_with_sandbox_rewards(tmp_path, tiny_model_dir):  # noqa: F811
    """trl's GRPOTrainer, two steps; every sampled answer is run against its instruction's kept tests."""
    import json
    import math

    from tests.test_finetune_stage import recipe, run_stage, write_data

    rows = [{"id": f"c{i}", "tests": f"assert add({i}, 1) == {i + 1}",
             "messages": [{"role": "user", "content": f"Write add(a, b). Example: add({i}, 1) is {i + 1}."},
                          {"role": "assistant", "content": "```python\ndef add(a, b):\n    return a + b\n```"}]}
            for i in range(4)]
    config = recipe(tmp_path, tiny_model_dir, objective="grpo", per_device_batch_size=2,
                    grpo={"num_generations": 2, "max_completion_length": 12, "sandbox": {"workers": 2,
                                                                                         "timeout_s": 3}})
    manifest = run_stage(config, write_data(tmp_path / "data.jsonl", rows))
    training = manifest["training"]
    assert training["objective"] == "grpo" and training["global_step"] == 2
    assert training["grpo"]["final_reward"] == 0.0  # a random model writes no working add()
    log = json.loads((tmp_path / "work" / "finetune" / "train_log.json").read_text())
    assert any("rewards/sandbox_tests_passed/mean" in entry for entry in log)
    assert all(math.isfinite(entry["loss"]) for entry in log if "loss" in entry)
