"""What a stage decontaminates against: HumanEval always, benchmarks from the Hub, and local benchmark files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.decontamination.benchmark_data import load_benchmark
from pipeline.decontamination.entries import humaneval_entries, jsonl_entries
from pipeline.decontamination.index import BenchmarkIndex
from pipeline.framework.config import StrictModel
from pipeline.framework.errors import ConfigError


class BenchmarkFile(BaseModel):
    """A benchmark to decontaminate against (config): a local file, in a known benchmark's format or by fields."""

    model_config = ConfigDict(extra="forbid")
    path: Path = Field(description="JSONL (optionally .gz), JSON or Parquet file of benchmark problems.")
    format: Literal["fields", "mbpp", "ds1000", "humaneval"] = Field(
        default="fields",
        description="fields: the listed fields hold prompts/solutions (JSONL); mbpp, ds1000, humaneval: a copy of "
        "that benchmark in its Hub layout (fields ignored).",
    )
    fields: list[str] = Field(
        default_factory=lambda: ["prompt", "text", "code"], description="Fields holding prompts or solutions."
    )


class DecontaminationSettings(StrictModel):
    """The settings of a stage that decontaminates: what it checks against besides HumanEval."""

    benchmarks: list[Literal["mbpp", "ds1000"]] = Field(
        default_factory=list,
        description="Benchmarks loaded from the Hub to decontaminate against, besides HumanEval (the paper recipe: "
        "mbpp for the seeds, mbpp and ds1000 for the final dataset); offline, give local copies in benchmark_files.",
    )
    benchmark_files: list[BenchmarkFile] = Field(
        default_factory=list,
        description="Local benchmark files (JSONL by fields, or MBPP / DS-1000 / HumanEval in their own format) to "
        "decontaminate against, besides HumanEval.",
    )

    def decontamination_index(self) -> "BenchmarkIndex":
        """The index of HumanEval, ``benchmarks`` and ``benchmark_files``."""
        return benchmark_index(self.benchmark_files, self.benchmarks)


def benchmark_index(files: Sequence[BenchmarkFile] = (), builtin: Sequence[str] = ()) -> BenchmarkIndex:
    """HumanEval (built in), the ``builtin`` benchmarks from the Hub (e.g. mbpp, ds1000) and the listed files."""
    entries = humaneval_entries()
    for name in builtin:
        entries.extend(load_benchmark(name))
    for file in files:
        if not Path(file.path).is_file():
            raise ConfigError(f"benchmark file {file.path} does not exist")
        if file.format == "fields":
            entries.extend(jsonl_entries(file.path, file.fields))
        else:
            entries.extend(load_benchmark(file.format, file.path))
    return BenchmarkIndex(entries)
