"""A pool of long-lived sandbox containers running jobs in parallel, one in flight per container."""

from __future__ import annotations

import atexit
import logging
import os
import queue
import signal
import socket
import threading
import uuid
import weakref
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import docker
import docker.errors

from .config import SandboxConfig
from .container import (
    LABEL, LABEL_OWNER_HOST, LABEL_OWNER_PID, LABEL_OWNER_START, ContainerLost, SandboxContainer,
    owner_labels, process_start_time,
)
from .engine import ENGINE_DOWN, connect, engine_alive
from .errors import SandboxError
from .image import ensure_image
from .job import Job
from .verdict import STATUSES, Verdict

log = logging.getLogger("sandbox")

_LIVE_POOLS: "weakref.WeakSet[SandboxPool]" = weakref.WeakSet()
_DONE = object()


def _close_live_pools() -> None:
    """At interpreter exit: close the pools this process opened (not those a forked child inherited)."""
    for pool in list(_LIVE_POOLS):
        if pool.owner_pid == os.getpid():
            pool.close()


atexit.register(_close_live_pools)


def remove_stale_containers(client: docker.DockerClient, everything: bool = False) -> List[str]:
    """Remove sandbox containers whose owning process (on this host) is gone; all of them if ``everything``.

    Returns the names removed. Containers owned by a live process, or by another host, are left alone.
    """
    host = socket.gethostname()
    removed = []
    for container in client.containers.list(all=True, filters={"label": f"{LABEL}=1"}):
        labels = container.labels or {}
        if not everything:
            if labels.get(LABEL_OWNER_HOST) != host:
                continue
            try:
                pid = int(labels.get(LABEL_OWNER_PID, ""))
            except ValueError:
                pid = -1
            started = process_start_time(pid) if pid > 0 else None
            if started is not None and started == (labels.get(LABEL_OWNER_START) or started):
                continue  # the owner is still running
        try:
            container.remove(force=True)
            removed.append(container.name)
        except docker.errors.NotFound:
            pass
    if removed:
        log.info("removed %d leftover sandbox container(s)", len(removed))
    return removed


def _each_in_parallel(fn, items) -> None:
    """Call ``fn(item)`` for every item in threads (serially at interpreter shutdown); re-raise the first error."""
    errors: List[BaseException] = []

    def call(item) -> None:
        try:
            fn(item)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = []
    for item in items:
        thread = threading.Thread(target=call, args=(item,), daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no new threads at interpreter shutdown
            call(item)
            continue
        threads.append(thread)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


class _Aborted(Exception):
    """The run a job belonged to was abandoned while the job was in flight."""


class _Slot:
    """A place in the pool: one container at a time, replaced when it dies."""

    def __init__(self, pool: "SandboxPool", index: int):
        self.pool = pool
        self.index = index
        self.generation = 0
        self.container: Optional[SandboxContainer] = None
        self._guard = threading.Lock()

    def start(self) -> None:
        """Start (or restart) this slot's container; SandboxError when the engine cannot."""
        self.stop()
        if self.pool.closing:
            raise _Aborted("the pool is closing")
        self.generation += 1
        name = f"selfcodealign-sandbox-{self.pool.run_id}-{self.index}-{self.generation}"
        try:
            container = SandboxContainer(self.pool.client, self.pool.config, self.pool.image, self.pool.labels, name)
        except ContainerLost as exc:
            raise SandboxError(str(exc)) from None
        except ENGINE_DOWN as exc:
            raise SandboxError(f"cannot start sandbox container {name}: {str(exc)[:300]}") from None
        with self._guard:
            self.container = container
        if self.pool.closing:  # closed while this container was starting: do not leak it
            self.stop()
            raise _Aborted("the pool is closing")

    def stop(self) -> None:
        """Remove the current container, if any."""
        with self._guard:
            container, self.container = self.container, None
        if container is not None:
            container.remove()

    def execute(self, job: Job, abort: Optional[threading.Event] = None) -> Verdict:
        """Run ``job``; a dead container is replaced and the job retried ``config.retries`` times."""
        config = self.pool.config
        timeout = job.timeout or config.timeout_s
        payload = {
            "id": job.id,
            "code": job.code,
            "timeout": timeout,
            "output_limit": config.output_limit_kb * 1024,
            "limits": {
                "cpu_s": config.cpu_limit_s(timeout),
                "memory_bytes": config.memory_mb * 1024 * 1024,
                "file_bytes": config.file_size_mb * 1024 * 1024,
                "open_files": config.open_files,
            },
        }
        failures: List[str] = []
        while True:
            if abort is not None and abort.is_set():
                raise _Aborted("the run was abandoned")
            if self.container is None:
                self.start()
            container = self.container
            if container is None or (abort is not None and abort.is_set()):
                raise _Aborted("the run was abandoned")
            try:
                result = container.run(payload, timeout + config.host_grace_s)
            except ContainerLost as exc:
                if self.pool.closing or (abort is not None and abort.is_set()):
                    raise _Aborted(str(exc)) from None
                failures.append(str(exc))
                log.warning("sandbox container %s lost during job %s: %s", container.name, job.id, exc)
                self.stop()
                if not engine_alive(self.pool.client):
                    raise SandboxError(
                        f"the Docker engine went away during job {job.id} ({exc}); "
                        "results returned so far are valid, rerun for the rest"
                    ) from None
                if len(failures) > config.retries:
                    return Verdict.error(job.id, "sandbox container died: " + " | ".join(failures))
                continue
            if result.get("id") != job.id or result.get("status") not in STATUSES:
                self.stop()
                return Verdict.error(job.id, f"worker answered {str(result)[:300]}")
            if not result.get("healthy", True):
                log.warning("sandbox container %s could not clean up after job %s: replacing it",
                            container.name, job.id)
                self.stop()
            return Verdict(
                id=job.id,
                status=result["status"],
                exit_code=result.get("exit_code"),
                duration_s=float(result.get("duration_s") or 0.0),
                stdout=result.get("stdout") or "",
                stderr=result.get("stderr") or "",
            )


class SandboxPool:
    """Long-lived sandbox containers (default one per CPU core) that run jobs in parallel.

    Use it as a context manager; containers are removed on close, on Ctrl-C, on an
    exception, at interpreter exit and on SIGTERM. Leftovers of a killed run are
    removed when the next pool starts.
    """

    def __init__(self, config: Optional[SandboxConfig] = None, client: Optional[docker.DockerClient] = None):
        """Connect to Docker (SandboxUnavailable if none), make sure the image exists, start the containers."""
        self.config = config or SandboxConfig()
        self.client = client or connect(self.config.docker_url)
        self.image = ensure_image(self.config, self.client)
        self.run_id = uuid.uuid4().hex[:10]
        self.owner_pid = os.getpid()
        self.labels = owner_labels(self.run_id)
        self.closing = False
        self._lock = threading.Lock()
        self._busy = threading.Lock()
        self._previous_sigterm = None
        remove_stale_containers(self.client)
        self._slots = [_Slot(self, i) for i in range(self.config.worker_count())]
        _LIVE_POOLS.add(self)
        self._install_sigterm()
        try:
            _each_in_parallel(_Slot.start, self._slots)
        except BaseException:
            self.close()
            raise
        log.info("sandbox pool %s: %d container(s) of %s", self.run_id, len(self._slots), self.image)

    @property
    def size(self) -> int:
        """Number of containers (jobs run at once)."""
        return len(self._slots)

    @property
    def container_ids(self) -> List[str]:
        """Ids of the containers currently running, slot by slot."""
        return [s.container.id if s.container else "" for s in self._slots]

    def imap(self, jobs: Iterable[Job], ordered: bool = False) -> Iterator[Verdict]:
        """Run ``jobs`` and yield verdicts as they complete (``ordered=True``: in input order).

        The input is consumed lazily, so a long generator is fine. Raises SandboxError
        when the sandbox fails (e.g. the engine is lost); verdicts yielded before stay valid.
        """
        if self.closing:
            raise SandboxError("the sandbox pool is closed")
        if not self._busy.acquire(blocking=False):
            raise SandboxError("the sandbox pool is already running jobs (one imap/run at a time)")
        source = iter(enumerate(jobs))
        source_lock = threading.Lock()
        results: "queue.Queue" = queue.Queue()
        stop = threading.Event()

        def next_job() -> Optional[Tuple[int, Job]]:
            with source_lock:
                if stop.is_set():
                    return None
                return next(source, None)

        def drive(slot: _Slot) -> None:
            try:
                while not stop.is_set():
                    item = next_job()
                    if item is None:
                        break
                    index, job = item
                    results.put((index, slot.execute(job, stop)))
            except _Aborted:
                if self.closing:
                    results.put((-1, SandboxError("the sandbox pool was closed while running jobs")))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                results.put((-1, exc))
            finally:
                results.put((-1, _DONE))

        threads = [threading.Thread(target=drive, args=(slot,), daemon=True,
                                    name=f"sandbox-slot-{slot.index}") for slot in self._slots]
        for thread in threads:
            thread.start()
        pending: Dict[int, Verdict] = {}
        expect = 0
        running = len(threads)
        try:
            while running:
                try:
                    index, item = results.get(timeout=0.5)
                except queue.Empty:
                    continue
                if item is _DONE:
                    running -= 1
                    continue
                if isinstance(item, BaseException):
                    stop.set()
                    if self.closing:
                        raise SandboxError("the sandbox pool was closed while running jobs")
                    if isinstance(item, SandboxError):
                        raise SandboxError(str(item)) from None
                    raise SandboxError(f"sandbox failed: {item!r}") from item
                if not ordered:
                    yield item
                    continue
                pending[index] = item
                while expect in pending:
                    yield pending.pop(expect)
                    expect += 1
        finally:
            stop.set()
            # Jobs still in flight belong to an abandoned run: drop their containers
            # (the slots start fresh ones on next use) so no answer is left pending.
            for slot, thread in zip(self._slots, threads):
                if thread.is_alive():
                    slot.stop()
            for thread in threads:
                thread.join()
            self._busy.release()

    def run(self, jobs: Iterable[Job], on_result: Optional[Callable[[Verdict], None]] = None) -> List[Verdict]:
        """Run ``jobs``; return their verdicts in input order, calling ``on_result`` as each completes.

        On SandboxError the verdicts finished before it are on the exception as ``completed``.
        """
        jobs = list(jobs)
        position = {}
        for i, job in enumerate(jobs):
            if job.id in position:
                raise ValueError(f"duplicate job id {job.id!r}")
            position[job.id] = i
        verdicts: List[Optional[Verdict]] = [None] * len(jobs)
        try:
            for verdict in self.imap(jobs):
                verdicts[position[verdict.id]] = verdict
                if on_result is not None:
                    on_result(verdict)
        except SandboxError as exc:
            exc.completed = [v for v in verdicts if v is not None]  # type: ignore[attr-defined]
            raise
        return verdicts  # type: ignore[return-value]

    def close(self) -> None:
        """Remove every container of the pool; safe to call twice, from any thread."""
        with self._lock:
            if self.closing:
                return
            self.closing = True
        _LIVE_POOLS.discard(self)
        self._restore_sigterm()
        _each_in_parallel(_Slot.stop, [s for s in self._slots if s.container is not None])
        log.info("sandbox pool %s closed", self.run_id)

    def __enter__(self) -> "SandboxPool":
        """The pool itself."""
        return self

    def __exit__(self, *exc_info) -> None:
        """Close the pool (remove its containers), whatever happened in the block."""
        self.close()

    def _install_sigterm(self) -> None:
        """Turn SIGTERM into SystemExit (so cleanup runs) when nobody else handles it."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def on_sigterm(signum, frame):  # noqa: ARG001
            raise SystemExit(128 + signum)

        self._previous_sigterm = signal.SIG_DFL
        self._sigterm_handler = on_sigterm
        signal.signal(signal.SIGTERM, on_sigterm)

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is None or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is getattr(self, "_sigterm_handler", None):
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        self._previous_sigterm = None


__all__ = ["SandboxPool", "remove_stale_containers"]
