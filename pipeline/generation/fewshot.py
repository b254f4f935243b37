"""The few-shot example bank (``configs/fewshot.yaml``) and reproducible sampling from it.

Each example has a seed snippet, its concepts, its properties (category,
difficulty, language), an instruction, a response and its tests. The
generation stages show k of them before each query; which k is decided by
the run seed and the row's id, so a rerun (or a resumed crash) builds the
very same prompts.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.framework.config import first_problem
from pipeline.framework.errors import ConfigError
from pipeline.framework.ids import seeded_random

DEFAULT_BANK = Path(__file__).resolve().parents[2] / "configs" / "fewshot.yaml"
DEFAULT_JUDGE_BANK = DEFAULT_BANK.with_name("docstring_judge.yaml")
Category = Literal["function", "class", "program"]
Difficulty = Literal["easy", "medium", "hard"]


class Properties(BaseModel):
    """What kind of task an example is."""

    model_config = ConfigDict(extra="forbid")
    category: Category
    difficulty: Difficulty
    language: str = "Python"


class FewShotExample(BaseModel):
    """One worked example: seed -> concepts -> instruction -> response + tests."""

    model_config = ConfigDict(extra="forbid")
    id: str
    seed: str = Field(min_length=1)
    concepts: list[str] = Field(min_length=1)
    properties: Properties
    instruction: str = Field(min_length=1)
    response: str = Field(min_length=1)
    tests: str = Field(min_length=1)


class FewShotBank(BaseModel):
    """All examples of one bank file."""

    model_config = ConfigDict(extra="forbid")
    version: int = 1
    examples: list[FewShotExample] = Field(min_length=1)

    def sample(self, k: int, *key: object, max_chars: int | None = None) -> list[FewShotExample]:
        """``k`` distinct examples chosen by ``key`` (e.g. run seed, stage, row id): same key, same examples.

        With ``max_chars``, only examples whose instruction, response and tests together are at most that
        long are drawn (short prompts for small models); an error names the limit when none is that short.
        """
        pool = self.examples
        if max_chars is not None:
            pool = [e for e in pool if len(e.instruction) + len(e.response) + len(e.tests) <= max_chars]
            if not pool:
                raise ConfigError(f"no few-shot example is at most {max_chars} characters long; raise fewshot_max_chars")
        return draw(pool, k, *key)


class JudgeExample(BaseModel):
    """One worked example of the docstring judge: a function and whether its docstring suffices."""

    model_config = ConfigDict(extra="forbid")
    id: str
    function: str = Field(min_length=1)
    verdict: Literal["yes", "no"]


class JudgeBank(BaseModel):
    """The docstring judge's examples."""

    model_config = ConfigDict(extra="forbid")
    version: int = 1
    examples: list[JudgeExample] = Field(min_length=2)

    def sample(self, k: int, *key: object) -> list[JudgeExample]:
        """``k`` examples chosen by ``key``, as :meth:`FewShotBank.sample`."""
        return draw(self.examples, k, *key)


def draw(pool: list, k: int, *key: object) -> list:
    """``k`` distinct items of ``pool`` (all of them when it holds fewer) drawn by ``key``: same key, same draw."""
    return seeded_random(*key).sample(pool, min(k, len(pool)))


def _load(path: Path, model: type[BaseModel]):
    """Read and validate a YAML bank; a problem names the file, the example's position and key."""
    if not Path(path).is_file():
        raise ConfigError(f"few-shot bank {path} does not exist")
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"few-shot bank {path}: not valid YAML ({exc})") from None
    try:
        bank = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"few-shot bank {path}: {first_problem(exc)}") from None
    ids = [e.id for e in bank.examples]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"few-shot bank {path}: example ids are not unique")
    return bank


@lru_cache(maxsize=8)
def load_bank(path: Path) -> FewShotBank:
    """The seed -> concepts -> instruction -> response bank at ``path``."""
    return _load(path, FewShotBank)


@lru_cache(maxsize=8)
def load_judge_bank(path: Path) -> JudgeBank:
    """The docstring judge's bank at ``path``."""
    return _load(path, JudgeBank)
