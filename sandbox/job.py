"""A program to run in the sandbox."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional


@dataclass(frozen=True)
class Job:
    """One program (code and its tests, as a single script) to run.

    ``timeout`` is the wall-clock limit in seconds; None takes the pool's
    ``SandboxConfig.timeout_s``.
    """

    id: str
    code: str
    timeout: Optional[float] = None

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> "Job":
        """Build a job from a mapping with ``id``, ``code`` and optionally ``timeout``."""
        if "id" not in row or "code" not in row:
            raise ValueError("a job needs 'id' and 'code'")
        if not isinstance(row["code"], str):
            raise ValueError("'code' must be a string")
        timeout = row.get("timeout")
        if timeout is not None:
            timeout = float(timeout)
            if timeout <= 0:
                raise ValueError("'timeout' must be positive")
        return cls(id=str(row["id"]), code=row["code"], timeout=timeout)
