"""Benchmarks as a stage input: one row per (benchmark, problem), with a digest chosen by the caller."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from pipeline.benchmarks.catalog import load_benchmark
from pipeline.benchmarks.problems import Benchmark
from pipeline.framework.ids import stable_id
from pipeline.framework.inputs import InputSource, StoreSource


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


def evaluation_source(config: Any, specs: list[str] | None, cache: Path, finetune: Any,
                      uses_finetuned: bool) -> BenchmarkSource:
    """The benchmarks of the evaluate stage's ``config`` (``specs`` from ``--input`` replacing its list).

    Read as configured, its digest is the finetune stage's output digest (``finetune``: that stage's store), so a
    new fine-tune makes the evaluation stale; from ``--input``, a digest of the benchmarks' content, and of the
    fine-tune's output when the fine-tune is one of the models (``uses_finetuned``).
    """
    benches = [load_benchmark(s, config.benchmark_files, cache).select(config.limit, config.task_ids)
               for s in (specs if specs is not None else config.benchmarks)]
    if specs is None:
        digest = StoreSource(finetune).digest()
    else:
        upstream = (finetune.read_manifest() or {}).get("output_digest") if uses_finetuned else None
        digest = stable_id(*(b.digest() for b in benches), upstream)
    return BenchmarkSource(benches, digest, ", ".join(f"{b.name} ({len(b.problems)})" for b in benches))
