"""The outcome of one program run in the sandbox."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Literal, Optional, Tuple

Status = Literal["passed", "failed", "timeout", "oom", "error"]

#: Every status a verdict can carry:
#: passed  - the program ran to its end and exited 0 (its tests ran, none failed);
#: failed  - an exception, a failing assert, a syntax error, a non-zero exit, or an
#:           exit (even with status 0) before the program's end;
#: timeout - wall-clock timeout or CPU-time rlimit exceeded;
#: oom     - MemoryError (address-space rlimit) or a cgroup OOM kill;
#: error   - the sandbox failed (container died twice, worker fault), not the program.
STATUSES: Tuple[str, ...] = ("passed", "failed", "timeout", "oom", "error")


@dataclass(frozen=True)
class Verdict:
    """Status, exit code, duration and output tails of one job."""

    id: str
    status: Status
    exit_code: Optional[int]
    duration_s: float
    stdout: str
    stderr: str

    @property
    def passed(self) -> bool:
        """True only for status ``passed``."""
        return self.status == "passed"

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict: id, status, passed, exit_code, duration_s, stdout, stderr."""
        row = asdict(self)
        row["passed"] = self.passed
        return {k: row[k] for k in ("id", "status", "passed", "exit_code", "duration_s", "stdout", "stderr")}

    @classmethod
    def error(cls, job_id: str, message: str, duration_s: float = 0.0) -> "Verdict":
        """A verdict for a job the sandbox could not run."""
        return cls(id=job_id, status="error", exit_code=None, duration_s=duration_s, stdout="", stderr=message)
