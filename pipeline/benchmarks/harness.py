"""One harness for every benchmark: answers become programs, programs run in the sandbox, verdicts per suite.

Time limits (EvalPlus's answer to slow machines, per problem here)
    Before a benchmark's answers run, each problem's reference solution runs
    with each of its suites (once: verdicts are cached, duration included).
    An answer's program for that suite then gets
    ``max(floor_s, factor * reference seconds)``, rounded up to a tenth of a
    second, so a slow CPU that needs longer for the reference grants longer
    to the answers. A problem without a reference, or whose reference does not
    pass (it is logged), gets the sandbox's ``timeout_s``.

Verdicts
    Every answer runs with its ``base`` suite and, where the benchmark has one,
    its ``plus`` suite. ``passed`` is the base verdict; ``plus_passed``
    requires both, as EvalPlus counts "base + extra".
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterable

from pipeline.benchmarks.answers import AnswerForm, assemble_program, solution
from pipeline.benchmarks.problems import Benchmark

log = logging.getLogger("pipeline.benchmarks")


@dataclass(frozen=True)
class TimeLimits:
    """How answers' time limits scale from the reference's runtime."""

    factor: float = 4.0
    floor_s: float = 4.0
    reference_timeout_s: float = 60.0

    def limit(self, reference_s: float) -> float:
        """The limit for an answer whose reference took ``reference_s`` seconds."""
        return math.ceil(max(self.floor_s, self.factor * reference_s) * 10) / 10


@dataclass(frozen=True)
class Answer:
    """One answer to score: which problem, which sample, its text and how to read it."""

    task_id: str
    text: str
    form: AnswerForm
    sample: int = 0


@dataclass
class SuiteResult:
    """The verdict of one answer's program with one suite."""

    status: str
    passed: bool
    duration_s: float | None
    stderr: str
    program_hash: str
    cached: bool
    time_limit_s: float | None


@dataclass
class Scored:
    """One scored answer: its solution, the base program, and a verdict per suite."""

    answer: Answer
    solution: str
    program: str
    suites: dict[str, SuiteResult]

    @property
    def passed(self) -> bool:
        """Whether the base suite passed."""
        return self.suites["base"].passed

    @property
    def plus_passed(self) -> bool | None:
        """Whether base and plus suites both passed; None without a plus suite."""
        plus = self.suites.get("plus")
        return None if plus is None else plus.passed and self.passed

    def row(self) -> dict:
        """The outcome as a plain row: task id, sample, and the pass flags results are computed from."""
        return {"task_id": self.answer.task_id, "sample": self.answer.sample, "passed": self.passed,
                "plus_passed": self.plus_passed}

    def stage_row(self, row_id: str, contender, benchmark: str, finish_reason: str) -> dict:
        """The evaluate stage's row of this answer by ``contender``: the answer, its program and its verdicts."""
        base, plus = self.suites["base"], self.suites.get("plus")
        return {"id": row_id, "model": contender.label, "model_path": contender.model_path, "benchmark": benchmark,
                "task_id": self.answer.task_id, "sample": self.answer.sample,
                "prompt_format": contender.prompt_format, "completion": self.answer.text,
                "finish_reason": finish_reason, "program": self.program, "status": base.status,
                "passed": base.passed, "plus_status": plus.status if plus else None, "plus_passed": self.plus_passed,
                "time_limit_s": base.time_limit_s, "duration_s": base.duration_s, "stderr": base.stderr,
                "program_hash": base.program_hash}


class Harness:
    """Scores answers to a benchmark's problems in an open :class:`pipeline.execution.verdicts.SandboxSession`."""

    def __init__(self, session, limits: TimeLimits | None = None):
        self.session = session
        self.limits = limits or TimeLimits()
        self._limits: dict[str, dict[tuple[str, str], float]] = {}

    def time_limits(self, benchmark: Benchmark) -> dict[tuple[str, str], float]:
        """``{(task_id, suite): seconds}`` from the references' runtimes (run once, then cached)."""
        key = benchmark.name + ":" + benchmark.digest()
        if key in self._limits:
            return self._limits[key]
        programs = {(p.task_id, s): assemble_program(p.reference, code)
                    for p in benchmark.problems if p.reference for s, code in p.suites.items()}
        timeout = self.limits.reference_timeout_s
        verdicts = self._run(programs, {k: timeout for k in programs}) if programs else {}
        broken = sorted({task for (task, _), v in verdicts.items() if not v["passed"]})
        if broken:
            shown = ", ".join(broken[:10]) + (f" (+{len(broken) - 10} more)" if len(broken) > 10 else "")
            log.warning("benchmark %s: the reference of %d problem(s) does not pass, they keep the sandbox's "
                        "time limit: %s", benchmark.name, len(broken), shown)
        found = {k: self.limits.limit(v["duration_s"] or 0.0) for k, v in verdicts.items() if v["passed"]}
        self._limits[key] = found
        return found

    def score(self, benchmark: Benchmark, answers: Iterable[Answer],
              on_verdict: Callable[[object], object] | None = None) -> list[Scored]:
        """Run each answer with each suite of its problem; results in the order of ``answers``."""
        problems = benchmark.by_id()
        answers = [a for a in answers if a.task_id in problems]
        limits = self.time_limits(benchmark)
        solutions = [solution(problems[a.task_id], a.text, a.form) for a in answers]
        programs, timeouts = {}, {}
        for index, (answer, code) in enumerate(zip(answers, solutions)):
            for suite, tests in problems[answer.task_id].suites.items():
                programs[(index, suite)] = assemble_program(code, tests)
                if (answer.task_id, suite) in limits:
                    timeouts[(index, suite)] = limits[(answer.task_id, suite)]
        verdicts = self._run(programs, timeouts, on_verdict)
        scored = []
        for index, (answer, code) in enumerate(zip(answers, solutions)):
            suites = {}
            for suite in problems[answer.task_id].suites:
                v = verdicts[(index, suite)]
                suites[suite] = SuiteResult(
                    status=v["status"], passed=bool(v["passed"]), duration_s=v.get("duration_s"),
                    stderr=v.get("stderr") or "", program_hash=v["program_hash"], cached=bool(v["cached"]),
                    time_limit_s=timeouts.get((index, suite)),
                )
            scored.append(Scored(answer, code, programs[(index, "base")], suites))
        return scored

    def _run(self, programs: dict, timeouts: dict, on_verdict=None) -> dict:
        """The session's verdicts for programs keyed by tuples (the session wants string keys)."""
        names = {key: "\x1f".join(map(str, key)) for key in programs}
        back = {name: key for key, name in names.items()}
        verdicts = self.session.run({names[k]: code for k, code in programs.items()},
                                    on_verdict=(lambda name: on_verdict(back[name])) if on_verdict else None,
                                    timeouts={names[k]: t for k, t in timeouts.items()})
        return {back[name]: verdict for name, verdict in verdicts.items()}

