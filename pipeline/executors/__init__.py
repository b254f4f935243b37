"""Executors run a map stage's batches; they know nothing of any particular stage.

``local`` (default) runs batches in this process, or in a process pool for
stages that declare their batches CPU-bound and independent. Every executor
yields results in submission order, so batches are committed in input order.
"""

from __future__ import annotations

import os
from typing import Any


def available_workers(requested: int) -> int:
    """Resolve a worker count: 0 means one per core."""
    return requested if requested > 0 else (os.cpu_count() or 1)


def create_executor(run_config: Any):
    """The executor named by ``run.executor``."""
    if run_config.executor == "local":
        from pipeline.executors.local import LocalExecutor

        return LocalExecutor(available_workers(run_config.workers))
    from pipeline.errors import StageNotBuiltError

    raise StageNotBuiltError(
        f"run.executor={run_config.executor!r} is not built yet (tracked in issue #8); use run.executor=local"
    )
