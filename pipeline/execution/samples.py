"""An executed sample: the columns the execute and repair stages write, and the dedup and preferences stages read."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import pyarrow as pa

#: The first columns of a sample row, as the execute and repair stages write them and the dedup stage keeps them.
SAMPLE_COLUMNS = {
    "id": (pa.string(), "the sample id"),
    "seed_id": (pa.string(), "the seed this row comes from"),
    "instruction_id": (pa.string(), "the instruction answered"),
    "instruction": (pa.string(), "the instruction"),
    "response": (pa.string(), "the response"),
}

#: What the sandbox says about a sample's program.
VERDICT_COLUMNS = {
    "status": (pa.string(), "its verdict: passed, failed, timeout, oom or error"),
    "passed": (pa.bool_(), "whether its tests passed (status == passed)"),
    "exit_code": (pa.int32(), "the program's exit code (null if killed or never run)"),
    "duration_s": (pa.float64(), "wall-clock seconds the program ran"),
    "stdout": (pa.string(), "tail of its standard output"),
    "stderr": (pa.string(), "tail of its standard error"),
    "program_hash": (pa.string(), "sha256 of the program run (the verdict cache key)"),
}

#: A sample with its tests and its verdict.
EXECUTED_COLUMNS = {**SAMPLE_COLUMNS, "tests": (pa.string(), "its tests"), **VERDICT_COLUMNS}

#: Verdicts that judge the answer as wrong (a sandbox ``error`` judges the sandbox, not the answer).
FAILED_STATUSES = ("failed", "timeout", "oom")


def with_verdict(row: dict, verdict: dict) -> dict:
    """``row`` with the verdict's columns (``verdict`` as :meth:`.verdicts.SandboxSession.run` gives it)."""
    return {**row, **{name: verdict[name] for name in VERDICT_COLUMNS}}


def group_by_instruction(rows: Iterable[dict]) -> dict[str, list[dict]]:
    """Samples grouped by ``instruction_id``, instructions in sorted order."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["instruction_id"]].append(row)
    return {key: groups[key] for key in sorted(groups)}
