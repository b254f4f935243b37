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
        from pipeline.framework.executors.local import LocalExecutor

        return LocalExecutor(available_workers(run_config.workers))
    try:
        import ray  # noqa: F401

        from pipeline.framework.executors.ray_executor import RayExecutor
    except ImportError:  # pragma: no cover - depends on the install
        from pipeline.framework.errors import PipelineError

        raise PipelineError("run.executor=ray needs Ray: pip install -e '.[ray]'") from None
    return RayExecutor(run_config.ray_address, run_config.workers)
