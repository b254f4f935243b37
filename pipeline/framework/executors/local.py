"""Run a map stage's batches in this process or in a local process pool, results in order."""

from __future__ import annotations

import multiprocessing
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Iterable, Iterator

from pipeline.framework.stage import BatchResult, MapStage

_worker_stage: MapStage | None = None


def _init_worker(stage: MapStage) -> None:
    """Process-pool initializer: keep the stage and run its setup once per process."""
    global _worker_stage
    _worker_stage = stage
    stage.setup()


def _run_batch(rows: list[dict]) -> tuple[BatchResult, float]:
    """Process one batch in a pool worker; return the result and the seconds it took."""
    assert _worker_stage is not None
    start = time.perf_counter()
    result = _worker_stage.process_batch(rows)
    return result, time.perf_counter() - start


class LocalExecutor:
    """Runs batches in-process, or across ``workers`` processes for parallel stages."""

    def __init__(self, workers: int):
        self.workers = max(1, workers)

    def map_ordered(
        self, stage: MapStage, batches: Iterable[list[dict]]
    ) -> Iterator[tuple[list[dict], BatchResult, float]]:
        """Yield ``(batch, result, seconds)`` for each batch, in the order the batches came."""
        if not stage.parallel or self.workers == 1:
            yield from self._serial(stage, batches)
        else:
            yield from self._pooled(stage, batches)

    @staticmethod
    def _serial(stage: MapStage, batches: Iterable[list[dict]]):
        stage.setup()
        try:
            for batch in batches:
                start = time.perf_counter()
                result = stage.process_batch(batch)
                yield batch, result, time.perf_counter() - start
        finally:
            stage.teardown()

    def _pooled(self, stage: MapStage, batches: Iterable[list[dict]]):
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker, initargs=(stage,))
        window: deque = deque()
        iterator = iter(batches)
        try:
            for batch in iterator:
                window.append((batch, pool.submit(_run_batch, batch)))
                if len(window) >= 2 * self.workers:
                    done_batch, future = window.popleft()
                    yield (done_batch, *future.result())
            while window:
                done_batch, future = window.popleft()
                yield (done_batch, *future.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
