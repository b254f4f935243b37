"""Rewards from execution for GRPO: the share of an instruction's tests a sampled answer passes in the sandbox.

The tests are those kept with the instruction's passing sample (the dedup
stage's ``tests``), never the tests a sampled answer writes for itself, which
it could write to pass. Each ``assert`` statement of the tests is one test
case, run as its own program: the answer's fenced Python blocks, the
statements before that assert (imports, fixtures), then the assert. The
reward is the share of cases that pass; a timeout, a crash, a sandbox error
or an early exit (``exit(0)`` before the assert ran) fails its case, so a
hollow answer (a ``pass`` body) earns 0. Programs go through the same
sandbox pool and verdict cache as the execute stage.
"""

from __future__ import annotations

import ast

from pydantic import Field

from pipeline.execution.verdicts import SandboxSession, build_program
from pipeline.framework.config import StrictModel
from sandbox import SandboxConfig


def split_test_cases(tests: str) -> list[str]:
    """One test per ``assert`` statement: the statements before it, then it (the whole block if none parse)."""
    try:
        tree = ast.parse(tests)
    except SyntaxError:
        return [tests]
    setup: list[str] = []
    cases: list[str] = []
    for node in tree.body:
        text = ast.get_source_segment(tests, node) or ""
        if isinstance(node, ast.Assert):
            cases.append("\n".join([*setup, text]))
        else:
            setup.append(text)
    return cases or [tests]


def answer_text(completion) -> str:
    """The text of a completion: a string, or the content of a conversation's last turn."""
    if isinstance(completion, list):
        return completion[-1]["content"] if completion else ""
    return str(completion)


class SandboxReward:
    """A trl reward function: for each completion, the share of its instruction's test cases that pass."""

    __name__ = "sandbox_tests_passed"  # trl logs each reward under its function's name

    def __init__(self, session: SandboxSession, drop_stdin_main: bool = True):
        self.session = session
        self.drop_stdin_main = drop_stdin_main

    def __call__(self, prompts, completions, tests, **_) -> list[float]:
        """Rewards in [0, 1], one per completion (``tests``: the dataset column, one entry per completion)."""
        programs: dict[str, str] = {}
        counts = []
        for i, (completion, block) in enumerate(zip(completions, tests)):
            cases = split_test_cases(block)
            counts.append(len(cases))
            for j, case in enumerate(cases):
                programs[f"{i}:{j}"] = build_program(answer_text(completion), case, self.drop_stdin_main)
        verdicts = self.session.run(programs)
        passed = [0] * len(counts)
        for key, verdict in verdicts.items():
            if verdict["passed"]:
                passed[int(key.split(":")[0])] += 1
        return [p / n for p, n in zip(passed, counts)]


class GrpoOptions(StrictModel):
    """Settings of reinforcement learning with the sandbox as reward (``objective: grpo``)."""

    num_generations: int = Field(default=4, ge=2, description="Answers sampled per instruction and step (the group "
                                                             "whose rewards are compared); must divide the effective "
                                                             "batch.")
    max_completion_length: int = Field(default=512, ge=1, description="Most new tokens per sampled answer.")
    temperature: float = Field(default=0.7, gt=0, description="Sampling temperature of the answers.")
    beta: float = Field(default=0.0, ge=0, description="KL penalty towards the start model (0: none and no "
                                                       "reference copy, trl's default).")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig,
                                   description="The sandbox the rewards run in (image, pool, limits).")
    drop_stdin_main: bool = Field(default=True, description="As in the execute stage.")


def grpo_settings(options: GrpoOptions) -> dict:
    """The ``GRPOConfig`` fields that differ from supervised training's arguments."""
    return {"num_generations": options.num_generations, "max_completion_length": options.max_completion_length,
            "temperature": options.temperature, "beta": options.beta, "remove_unused_columns": False}


def grpo_trainer(model, args, rows: list[dict], tokenizer, reward: SandboxReward):
    """trl's ``GRPOTrainer``: each conversation's turns before its last answer as the prompt, its ``tests`` kept."""
    import datasets

    from pipeline.training.preference import require_trl

    data = datasets.Dataset.from_list([{"prompt": row["messages"][:-1], "tests": row["tests"]} for row in rows])
    return require_trl("grpo").GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=data, processing_class=tokenizer)


def reward_metrics(log_history: list[dict]) -> dict:
    """The first and last logged mean reward."""
    rewards = [round(float(e["reward"]), 4) for e in log_history if "reward" in e]
    return {"first_reward": rewards[0], "final_reward": rewards[-1]} if rewards else {}
