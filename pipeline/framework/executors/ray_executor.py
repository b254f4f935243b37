"""Run a map stage's batches on a Ray cluster, with the very batch function the local executor runs.

How a stage is placed follows its ``ray_layout``:

* ``tasks``: CPU-bound, stateless batches (seeds extraction) become Ray tasks,
  retried by Ray when a worker dies;
* ``per_gpu``: generation stages get one actor per GPU (``tensor_parallel_size``
  GPUs each when the model section asks for more), each holding one model
  replica; with no GPU in the cluster, a single CPU actor;
* ``per_node``: the execute stage gets one actor per node, each owning a
  sandbox pool sized to that node's cores;
* ``single``: any other stateful stage gets one actor.

Actors are restarted by Ray when their process dies, and the batch in flight
is retried on the new one. Results come back in submission order, so batches
are committed in input order exactly as with the local executor. Connecting
to an existing cluster (``run.ray_address``, e.g. ``auto`` or
``ray://head:10001``) and starting a local one (no address) both work.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from collections import deque
from typing import Any, Iterable, Iterator

from pipeline.framework.stage import BatchResult, MapStage

log = logging.getLogger("pipeline.ray")

_READY: dict[str, MapStage] = {}


def _run_in_task(key: str, stage: MapStage, rows: list[dict]) -> tuple[BatchResult, float]:
    """Body of the Ray task: set the stage up once per worker process, then process one batch."""
    ready = _READY.get(key)
    if ready is None:
        stage.setup()
        ready = _READY[key] = stage
    start = time.perf_counter()
    result = ready.process_batch(rows)
    return result, time.perf_counter() - start


class _StageActor:
    """Holds one set-up copy of a stage (a model replica, a sandbox pool) and processes batches."""

    def __init__(self, stage: MapStage):
        self.stage = stage
        stage.setup()

    def process(self, rows: list[dict]) -> tuple[BatchResult, float]:
        start = time.perf_counter()
        result = self.stage.process_batch(rows)
        return result, time.perf_counter() - start

    def close(self) -> None:
        self.stage.teardown()


def connect(address: str | None, workers: int = 0) -> None:
    """Join the cluster at ``address``, or start a local one (``workers`` CPUs, 0 = all cores)."""
    import ray

    if ray.is_initialized():
        return
    options: dict[str, Any] = {"ignore_reinit_error": True, "include_dashboard": False, "log_to_driver": False}
    if address:
        ray.init(address=address, **options)  # the nodes must have this project installed
    else:
        # a local cluster: its workers import this checkout, installed or not
        root = str(Path(__file__).resolve().parents[3])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        ray.init(num_cpus=workers or None, runtime_env={"env_vars": {"PYTHONPATH": path}}, **options)
    log.info("ray: connected, cluster resources %s", ray.cluster_resources())


class RayExecutor:
    """Runs batches as Ray tasks or on Ray actors; yields results in submission order."""

    def __init__(self, address: str | None = None, workers: int = 0, max_retries: int = 3):
        connect(address, workers)
        self.max_retries = max_retries

    # -- placement ---------------------------------------------------------
    def _actor_options(self, stage: MapStage) -> list[dict]:
        """Ray options of each actor to start for a stateful stage."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        layout = stage.ray_layout
        restart = {"max_restarts": self.max_retries, "max_task_retries": self.max_retries}
        if layout == "per_node":
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            return [
                {"num_cpus": 1, **restart,
                 "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False)}
                for n in nodes
            ]
        if layout == "per_gpu":
            gpus = int(ray.cluster_resources().get("GPU", 0))
            per_replica = max(1, getattr(stage.model_config, "tensor_parallel_size", 1) or 1)
            if gpus >= per_replica:
                return [{"num_gpus": per_replica, **restart} for _ in range(gpus // per_replica)]
        return [{"num_cpus": 1, **restart}]

    # -- running -----------------------------------------------------------
    def map_ordered(self, stage: MapStage, batches: Iterable[list[dict]]) -> Iterator[tuple[list[dict], BatchResult, float]]:
        """Yield ``(batch, result, seconds)`` per batch, in the order the batches came."""
        if stage.ray_layout == "tasks":
            yield from self._tasks(stage, batches)
        else:
            yield from self._actors(stage, batches)

    def _tasks(self, stage: MapStage, batches: Iterable[list[dict]]):
        import ray

        from pipeline.framework.ids import stable_id

        remote = ray.remote(max_retries=self.max_retries, retry_exceptions=False)(_run_in_task)
        stage_ref = ray.put(stage)
        key = stable_id(type(stage).__name__, stage.config.model_dump_json(), time.time_ns())
        window_size = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
        window: deque = deque()
        for batch in batches:
            window.append((batch, remote.remote(key, stage_ref, batch)))
            if len(window) >= window_size:
                done_batch, ref = window.popleft()
                yield (done_batch, *ray.get(ref))
        while window:
            done_batch, ref = window.popleft()
            yield (done_batch, *ray.get(ref))

    def _actors(self, stage: MapStage, batches: Iterable[list[dict]]):
        import ray

        actor_cls = ray.remote(_StageActor)
        actors = [actor_cls.options(**opts).remote(stage) for opts in self._actor_options(stage)]
        log.info("%s: %d Ray actor(s) (%s)", stage.name, len(actors), stage.ray_layout)
        window: deque = deque()
        try:
            for i, batch in enumerate(batches):
                window.append((batch, actors[i % len(actors)].process.remote(batch)))
                if len(window) >= 2 * len(actors):
                    done_batch, ref = window.popleft()
                    yield (done_batch, *ray.get(ref))
            while window:
                done_batch, ref = window.popleft()
                yield (done_batch, *ray.get(ref))
        finally:
            for actor in actors:
                try:
                    ray.get(actor.close.remote(), timeout=60)
                except Exception:  # the actor may already be gone; its resources go with it
                    pass
                ray.kill(actor)
