"""Running programs in the Docker sandbox for the pipeline: program assembly, a verdict cache, errors.

Shared by the execute stage (responses with their tests) and the evaluate
stage (benchmark completions with the benchmark's tests).

The verdict cache is a SQLite file, ``work_dir/cache/verdicts.sqlite``, keyed
by the hash of the program and of the sandbox limits that can change a
verdict (timeouts, memory, output caps, the image). It lives outside every
stage's folder, so rerunning a stage (``--force``, a changed upstream) or
resuming a crashed one executes no program twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterable

from pipeline.errors import PipelineError
from pipeline.prompting import python_blocks

log = logging.getLogger("pipeline.execution")

#: SandboxConfig fields that can change a program's verdict (the rest: how many, where, how built).
VERDICT_LIMITS = (
    "timeout_s", "cpu_time_s", "memory_mb", "container_memory_mb", "cpus", "pids_limit", "tmpfs_mb", "shm_mb",
    "file_size_mb", "open_files", "output_limit_kb", "user", "image",
)


def build_program(response: str, tests: str) -> str:
    """The program that checks a response: its fenced Python blocks in order, a blank line, then its tests.

    Blocks tagged ``python``, ``py``, ``python3`` or untagged count; prose outside the fences is left out.
    """
    code = "\n\n".join(block.rstrip() for block in python_blocks(response))
    return f"{code}\n\n{tests.rstrip()}\n"


def program_hash(program: str) -> str:
    """sha256 of a program's text."""
    return hashlib.sha256(program.encode("utf-8", "surrogatepass")).hexdigest()


def verdict_key(program: str, timeout: float | None = None) -> str:
    """The cache key of a program's verdict: its hash, or with its own time limit, the hash of both."""
    if timeout is None:
        return program_hash(program)
    return program_hash(f"{program}\0timeout={timeout:g}")


def limits_key(sandbox_config: Any) -> str:
    """A short hash of the sandbox settings that can change a verdict."""
    view = {name: getattr(sandbox_config, name, None) for name in VERDICT_LIMITS}
    return hashlib.sha256(json.dumps(view, sort_keys=True, default=str).encode()).hexdigest()[:16]


class VerdictCache:
    """Verdicts by program hash and sandbox limits, in one SQLite file (safe across crashes)."""

    def __init__(self, path: Path, limits: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.limits = limits
        self.db = sqlite3.connect(path, timeout=60)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS verdicts (program TEXT, limits TEXT, verdict TEXT, PRIMARY KEY (program, limits))"
        )
        self.db.commit()

    def get_many(self, hashes: Iterable[str]) -> dict[str, dict]:
        """The cached verdicts among ``hashes``."""
        found: dict[str, dict] = {}
        wanted = list(dict.fromkeys(hashes))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT program, verdict FROM verdicts WHERE limits = ? AND program IN ({marks})"
            for program, verdict in self.db.execute(query, [self.limits, *chunk]):
                found[program] = json.loads(verdict)
        return found

    def put(self, program: str, verdict: dict) -> None:
        """Store one verdict at once (committed, so a crash right after keeps it)."""
        self.db.execute(
            "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?)", (program, self.limits, json.dumps(verdict))
        )
        self.db.commit()

    def close(self) -> None:
        """Close the database."""
        self.db.close()


class SandboxSession:
    """A sandbox pool plus the verdict cache, opened once per stage run.

    Turns the sandbox's own errors (no Docker engine, the engine lost mid-run)
    into one-line :class:`PipelineError` messages; verdicts finished before an
    error are already in the cache.
    """

    def __init__(self, sandbox_config: Any, work_dir: Path):
        self.config = sandbox_config
        self.cache_path = Path(work_dir) / "cache" / "verdicts.sqlite"
        self.pool = None
        self.cache: VerdictCache | None = None

    def open(self) -> "SandboxSession":
        """Build the image if missing, start the containers, open the cache."""
        from sandbox import SandboxError, SandboxPool

        try:
            self.pool = SandboxPool(self.config)
        except SandboxError as exc:
            raise PipelineError(f"sandbox: {exc}") from None
        self.cache = VerdictCache(self.cache_path, limits_key(self.config.model_copy(update={"image": self.pool.image})))
        return self

    def close(self) -> None:
        """Remove the containers and close the cache."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    def run(self, programs: dict[str, str], on_verdict: Callable[[str], None] | None = None,
            timeouts: dict[str, float] | None = None) -> dict[str, dict]:
        """Verdicts (as dicts) for ``{key: program}``; cached programs are not run again, duplicates run once.

        ``on_verdict(key)`` is called once per key as its verdict is known (for progress bars).
        ``timeouts`` gives some keys a wall-clock limit of their own (else the
        sandbox's ``timeout_s``); the limit is then part of the cache key.
        """
        from sandbox import Job, SandboxError

        assert self.pool is not None and self.cache is not None, "open() the session first"
        timeouts = timeouts or {}
        hashes = {key: verdict_key(code, timeouts.get(key)) for key, code in programs.items()}
        known = self.cache.get_many(hashes.values())
        todo: dict[str, str] = {}
        limits: dict[str, float | None] = {}
        for key, digest in hashes.items():
            if digest not in known and digest not in todo:
                todo[digest] = programs[key]
                limits[digest] = timeouts.get(key)
        waiting: dict[str, list[str]] = {}
        for key, digest in hashes.items():
            if digest in known:
                if on_verdict:
                    on_verdict(key)
            else:
                waiting.setdefault(digest, []).append(key)

        def record(verdict) -> None:
            row = verdict.to_dict()
            row.pop("id")
            self.cache.put(verdict.id, row)
            known[verdict.id] = row
            for key in waiting.get(verdict.id, []):
                if on_verdict:
                    on_verdict(key)

        try:
            self.pool.run([Job(id=digest, code=code, timeout=limits[digest]) for digest, code in todo.items()],
                          on_result=record)
        except SandboxError as exc:
            raise PipelineError(
                f"sandbox failed mid-run ({exc}); every verdict finished so far is kept: rerun the same command"
            ) from None
        return {key: {**known[digest], "program_hash": digest, "cached": digest not in todo}
                for key, digest in hashes.items()}

    def __enter__(self) -> "SandboxSession":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
