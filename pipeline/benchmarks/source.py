"""Benchmarks as a stage input: one row per (benchmark, problem), with a digest chosen by the caller."""

from __future__ import annotations

from typing import Iterator

from pipeline.benchmarks.problems import Benchmark
from pipeline.framework.inputs import InputSource


class BenchmarkSource(InputSource):
    """The problems of some benchmarks; the benchmarks themselves stay available as ``benchmarks``.

    ``digest`` is given by the caller: the evaluate stage makes it the finetune
    stage's output digest when it reads its upstream (so a new fine-tuned
    model makes the evaluation stale), or a digest of the benchmarks' content
    when they come from ``--input``.
    """

    def __init__(self, benchmarks: list[Benchmark], digest: str, description: str):
        self.benchmarks = benchmarks
        self._digest = digest
        self.description = description

    def columns(self) -> list[str]:
        """The fields every row has."""
        return ["benchmark", "task_id", "prompt", "entry_point"]

    def iter_rows(self) -> Iterator[dict]:
        """The problems, benchmark by benchmark, in benchmark order; ``id`` is ``<benchmark>:<task id>``."""
        for bench in self.benchmarks:
            for p in bench.problems:
                yield {"id": f"{bench.name}:{p.task_id}", "benchmark": bench.name, "task_id": p.task_id,
                       "prompt": p.prompt, "entry_point": p.entry_point}

    def digest(self) -> str:
        """The digest chosen by the caller."""
        return self._digest

    def count(self) -> int | None:
        """How many problems in all."""
        return sum(len(b.problems) for b in self.benchmarks)
