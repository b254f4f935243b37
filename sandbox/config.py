"""Settings of the sandbox: image, pool size, container and per-program limits.

Embedded in the pipeline's YAML config as ``stages.execute.sandbox``.
"""

from __future__ import annotations

import math
import os
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_PRELOAD = [
    "abc", "array", "ast", "bisect", "collections", "copy", "dataclasses", "datetime",
    "decimal", "enum", "fractions", "functools", "hashlib", "heapq", "io", "itertools",
    "json", "math", "operator", "random", "re", "statistics", "string", "textwrap",
    "typing", "unittest",
]


class SandboxConfig(BaseModel):
    """How the sandbox is built and how hard it holds the programs it runs."""

    model_config = ConfigDict(extra="forbid")

    image: Optional[str] = Field(
        None,
        description="Image to run. None: `selfcodealign-sandbox:<hash of recipe + worker>`, built when missing.",
    )
    build: Literal["auto", "offline", "dockerfile"] = Field(
        "auto",
        description="How a missing image is built: `dockerfile` (sandbox/Dockerfile, needs a registry), "
        "`offline` (debootstrap + docker import), `auto` (dockerfile when the registry answers, else offline).",
    )
    debian_mirror: str = Field(
        "http://deb.debian.org/debian", description="Debian mirror the offline build bootstraps from."
    )
    workers: Optional[int] = Field(
        None, ge=1, description="Containers in the pool, one job in flight each. None: one per CPU core."
    )
    timeout_s: float = Field(10.0, gt=0, description="Default wall-clock limit of one program, in seconds.")
    cpu_time_s: Optional[int] = Field(
        None, ge=1, description="CPU-seconds rlimit of one program. None: the timeout rounded up, plus one."
    )
    memory_mb: int = Field(1024, ge=16, description="Address-space rlimit of one program, in MiB.")
    container_memory_mb: Optional[int] = Field(
        None, ge=32,
        description="cgroup memory limit of one container (worker + program + tmpfs), no swap. "
        "None: memory_mb + tmpfs_mb + shm_mb + 128.",
    )
    cpus: float = Field(1.0, gt=0, description="CPU share of one container (1.0 = one core).")
    pids_limit: int = Field(256, ge=8, description="Most processes (and threads) alive in one container.")
    tmpfs_mb: int = Field(256, ge=1, description="Size of the tmpfs at /tmp holding each program's work dir.")
    shm_mb: int = Field(16, ge=1, description="Size of /dev/shm (wiped after every program).")
    file_size_mb: int = Field(64, ge=1, description="Largest file a program may write (RLIMIT_FSIZE), in MiB.")
    open_files: int = Field(256, ge=16, description="Most open file descriptors of one program (RLIMIT_NOFILE).")
    output_limit_kb: int = Field(
        16, ge=0, description="Kept tail of stdout and of stderr, each, in KiB; the rest is counted, not kept."
    )
    user: str = Field("65534:65534", description="uid:gid the worker and programs run as (unprivileged).")
    preload_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PRELOAD),
        description="Modules the warm worker imports once, so forked programs find them loaded.",
    )
    retries: int = Field(
        1, ge=0, description="Times a job whose container died is retried on a fresh container before 'error'."
    )
    host_grace_s: float = Field(
        30.0, gt=0,
        description="Extra seconds the host waits past a job's timeout before it declares the container hung.",
    )
    start_timeout_s: float = Field(60.0, gt=0, description="Seconds a new container has to greet the host.")
    docker_url: Optional[str] = Field(
        None, description="Docker engine address (e.g. unix:///var/run/docker.sock). None: DOCKER_HOST / default."
    )

    @model_validator(mode="after")
    def _container_fits_program(self) -> "SandboxConfig":
        if self.container_memory_mb is not None and self.container_memory_mb < self.tmpfs_mb + 32:
            raise ValueError("container_memory_mb must exceed tmpfs_mb by at least 32")
        return self

    def worker_count(self) -> int:
        """Number of containers the pool runs."""
        if self.workers:
            return self.workers
        try:
            return len(os.sched_getaffinity(0)) or 1
        except (AttributeError, OSError):
            return os.cpu_count() or 1

    def cpu_limit_s(self, timeout_s: float) -> int:
        """CPU-seconds rlimit for a program with wall-clock limit ``timeout_s``."""
        if self.cpu_time_s is not None:
            return self.cpu_time_s
        return int(math.ceil(timeout_s)) + 1

    def container_memory_bytes(self) -> int:
        """cgroup memory limit of one container, in bytes."""
        mb = self.container_memory_mb or (self.memory_mb + self.tmpfs_mb + self.shm_mb + 128)
        return mb * 1024 * 1024
