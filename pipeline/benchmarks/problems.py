"""A benchmark as data: problems with a prompt, an entry point, test suites and (when known) a reference.

Every benchmark format (HumanEval, EvalPlus, MBPP) is read into the same
:class:`Problem`, so one harness scores them all. A problem's *suites* are
pieces of test code appended after a solution to make a program: ``base``
always, ``plus`` for the EvalPlus benchmarks (their extra inputs). A problem
is *whole-program* when its prompt does not start the function (MBPP: the
prompt is a task description), so a model writes the whole function.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from pipeline.framework.errors import PipelineError


@dataclass(frozen=True)
class Problem:
    """One benchmark problem, whatever file format it came from."""

    task_id: str
    prompt: str
    entry_point: str
    suites: dict[str, str]
    reference: str | None = None
    description: str = ""

    @property
    def whole_program(self) -> bool:
        """True when the prompt does not define the entry point, so an answer must (MBPP style)."""
        return not defines(self.prompt, self.entry_point)


@dataclass
class Benchmark:
    """A named list of problems, where they came from, and which suites they carry."""

    name: str
    problems: list[Problem]
    source: str
    suite_names: tuple[str, ...] = field(default=("base",))

    @property
    def has_plus(self) -> bool:
        """Whether the problems carry a ``plus`` suite (the EvalPlus benchmarks)."""
        return "plus" in self.suite_names

    def by_id(self) -> dict[str, Problem]:
        """The problems by task id."""
        return {p.task_id: p for p in self.problems}

    def digest(self) -> str:
        """A short digest of the problems' content (ids, prompts, entry points, suites, references)."""
        h = hashlib.sha256(self.name.encode())
        for p in self.problems:
            h.update(json.dumps([p.task_id, p.prompt, p.entry_point, p.suites, p.reference], sort_keys=True).encode())
        return h.hexdigest()[:16]

    def select(self, limit: int | None = None, task_ids: list[str] | None = None) -> "Benchmark":
        """The problems named by ``task_ids`` (in benchmark order), then the first ``limit`` of those.

        An unknown task id is an error naming it, so a typo never shrinks a run silently.
        """
        problems = self.problems
        if task_ids is not None:
            known = {p.task_id for p in problems}
            unknown = [t for t in task_ids if t not in known]
            if unknown:
                raise PipelineError(f"benchmark {self.name}: unknown task id(s) {', '.join(unknown)} "
                                    f"(e.g. {problems[0].task_id!r})")
            wanted = set(task_ids)
            problems = [p for p in problems if p.task_id in wanted]
        problems = problems if limit is None else problems[:limit]
        return Benchmark(self.name, problems, self.source, self.suite_names)


def defines(code: str, name: str) -> bool:
    """Whether ``code`` defines a function ``name`` (at any indentation, so a method-looking answer counts too)."""
    return re.search(rf"^\s*(async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None
