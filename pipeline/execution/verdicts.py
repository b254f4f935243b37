"""Running programs in the Docker sandbox for the pipeline: program assembly, a verdict cache, errors.

Shared by the execute stage (responses with their tests) and the evaluate
stage (benchmark completions with the benchmark's tests).

The verdict cache is a SQLite file, ``work_dir/cache/verdicts.sqlite``, keyed
by the hash of the program and of the sandbox limits that can change a
verdict (timeouts, memory, output caps, the image). It lives outside every
stage's folder, so rerunning a stage (``--force``, a changed upstream) or
resuming a crashed one executes no program twice. Only verdicts about the
program are cached: ``error`` (the sandbox's own fault: a container that died
twice, a worker that broke its protocol) is not, so the next run retries it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterable

from pipeline.framework.errors import PipelineError
from pipeline.framework.preflight import FAIL, OK, WARN, Check
from pipeline.generation.prompting import python_blocks

log = logging.getLogger("pipeline.execution")

#: SandboxConfig fields that can change a program's verdict (the rest: how many, where, how built).
VERDICT_LIMITS = (
    "timeout_s", "cpu_time_s", "memory_mb", "container_memory_mb", "cpus", "pids_limit", "tmpfs_mb", "shm_mb",
    "file_size_mb", "open_files", "output_limit_kb", "user", "image",
)



def settings_without_verdict(section: str = "sandbox") -> tuple[str, ...]:
    """Dotted config paths of the sandbox settings outside :data:`VERDICT_LIMITS` (how many containers, where
    the engine is, how the image is built): they change no verdict, so a stage leaves them out of its fingerprint."""
    from sandbox import SandboxConfig

    return tuple(f"{section}.{name}" for name in SandboxConfig.model_fields if name not in VERDICT_LIMITS)


#: The status of a verdict about the sandbox rather than the program: never cached, retried on the next run.
SANDBOX_FAULT = "error"


def build_program(response: str, tests: str, drop_stdin_main: bool = False) -> str:
    """The program that checks a response: its fenced Python blocks in order, a blank line, then its tests.

    Blocks tagged ``python``, ``py``, ``python3`` or untagged count; prose outside the fences is left out.
    With ``drop_stdin_main``, a main block that reads standard input is cut (see :func:`without_stdin_main`).
    """
    code = "\n\n".join(block.rstrip() for block in python_blocks(response))
    if drop_stdin_main:
        code = without_stdin_main(code)
    return f"{code}\n\n{tests.rstrip()}\n"


def _is_main_guard(node: ast.stmt) -> bool:
    """Whether ``node`` is ``if __name__ == "__main__":`` (either side of the ``==``)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare) or len(node.test.ops) != 1:
        return False
    if not isinstance(node.test.ops[0], ast.Eq):
        return False
    sides = [node.test.left, *node.test.comparators]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    texts = [s.value for s in sides if isinstance(s, ast.Constant)]
    return names == ["__name__"] and texts == ["__main__"]


def _reads_stdin(node: ast.AST) -> bool:
    """Whether the code under ``node`` calls ``input()`` or touches ``sys.stdin`` / ``fileinput``."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == "input":
            return True
        if isinstance(sub, ast.Attribute) and sub.attr == "stdin":
            return True
        if isinstance(sub, ast.Name) and sub.id in ("stdin", "fileinput"):
            return True
    return False


def without_stdin_main(code: str) -> str:
    """``code`` without its top-level ``if __name__ == "__main__":`` blocks that read standard input.

    The sandbox gives a program no input, so such a block would wait or fail before the tests run; as
    in the published execution filter, the program runs without it. Code that does not parse is
    returned unchanged (it fails in the sandbox with its own error).
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code
    cut = [node for node in tree.body if _is_main_guard(node) and _reads_stdin(node)]
    if not cut:
        return code
    lines = code.split("\n")
    for node in reversed(cut):
        del lines[node.lineno - 1 : node.end_lineno]
    return "\n".join(lines).rstrip()


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
        """The cached verdicts among ``hashes`` (a sandbox fault stored by an older version is not served)."""
        found: dict[str, dict] = {}
        wanted = list(dict.fromkeys(hashes))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT program, verdict FROM verdicts WHERE limits = ? AND program IN ({marks})"
            for program, verdict in self.db.execute(query, [self.limits, *chunk]):
                row = json.loads(verdict)
                if row.get("status") != SANDBOX_FAULT:
                    found[program] = row
        return found

    def put(self, program: str, verdict: dict) -> None:
        """Store one verdict at once (committed, so a crash right after keeps it); a sandbox fault is not stored."""
        if verdict.get("status") == SANDBOX_FAULT:
            return
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


def sandbox_preflight(stage: str, key: str, sandbox_config: Any) -> list[Check]:
    """Preflight checks of the sandbox a stage runs programs in: the Docker engine answers, the image is there.

    ``key`` is the config path of the sandbox section (e.g. ``stages.execute.sandbox``). A missing image that
    the stage would build itself (the default tag) is a warning; a named image that is missing is a failure.
    """
    from sandbox import SandboxUnavailable, image_tag
    from sandbox.engine import connect
    from sandbox.image import image_exists

    try:
        client = connect(sandbox_config.docker_url, timeout=15)
    except SandboxUnavailable as exc:
        return [Check(stage, "Docker engine", "not reachable", sandbox_config.docker_url or "default socket", FAIL,
                      f"{stage}: {key}: {exc}")]
    checks = [Check(stage, "Docker engine", "answers", sandbox_config.docker_url or "default socket", OK)]
    default = image_tag()
    tag = sandbox_config.image or default
    try:
        present = image_exists(client, tag)
    finally:
        client.close()
    if present:
        checks.append(Check(stage, "sandbox image", "present", tag, OK))
    elif tag != default:
        checks.append(Check(stage, "sandbox image", "missing", tag, FAIL,
                            f"{stage}: {key}.image {tag} not found in the Docker engine "
                            "(build it, or set it to null to build the default)"))
    else:
        checks.append(Check(stage, "sandbox image", "missing: built when the stage starts", tag, WARN,
                            f"{stage}: sandbox image {tag} is missing; the stage builds it first "
                            f"({key}.build: {sandbox_config.build}), which takes minutes"))
    return checks
