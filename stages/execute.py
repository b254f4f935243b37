"""execute: every response runs with its own tests in the Docker sandbox.

The program for a response is its fenced Python blocks, in order, then a
blank line, then its tests block (see ``pipeline.execution.verdicts.build_program``).
A ``if __name__ == "__main__":`` block that reads standard input is left out,
as in the published filter (``drop_stdin_main``; the sandbox has no input).
Programs run in a pool of long-lived, locked-down containers (no network,
read-only root, unprivileged user, rlimits, a wall-clock timeout). Each
sample is written with its verdict: ``passed`` (the tests ran to their end),
``failed`` (an assertion or exception, or an early exit), ``timeout``,
``oom`` (out of memory) or ``error`` (the sandbox's own fault). No sample is
dropped here; the dedup stage keeps the passing ones.

Verdicts are cached by the program's hash (and the sandbox limits), outside
the stage's folder: a rerun, or a resumed crash, executes nothing twice, and
identical programs run once. The manifest counts each status. An ``error``
verdict is not cached, and a finished run holding any reads as stale, so the
same command again retries those samples (the rest come from the cache).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from pipeline.execution.samples import EXECUTED_COLUMNS, with_verdict
from pipeline.execution.verdicts import SandboxSession, build_program, sandbox_preflight, settings_without_verdict
from pipeline.framework.config import StageConfig
from pipeline.framework.progress import progress
from pipeline.framework.stage import BatchResult, MapStage
from sandbox import SandboxConfig

CARRIED = ("seed_id", "instruction_id", "instruction", "response", "tests")


class ExecuteConfig(StageConfig):
    """Settings of the execute stage."""

    sandbox: SandboxConfig = Field(default_factory=SandboxConfig, description="The sandbox's image, pool and limits.")
    drop_stdin_main: bool = Field(
        default=True,
        description="Run a program without its `if __name__ == \"__main__\":` block when that block reads "
        "standard input (input(), sys.stdin), as published; false runs the program as written.",
    )


class ExecuteStage(MapStage):
    """Run each response's tests in the sandbox."""

    name = "execute"
    title = "Each response run with its tests in the Docker sandbox"
    upstream = "responses"
    Config = ExecuteConfig
    parallel = False  # the sandbox pool runs programs in parallel itself
    ray_layout = "per_node"  # under Ray: one actor per node, owning a pool sized to that node's cores
    timing_columns = ("duration_s",)
    unfingerprinted = settings_without_verdict()
    input_columns = {
        "id": "response id", "seed_id": "seed id", "instruction_id": "instruction id",
        "instruction": "the instruction", "response": "the response (fenced Python solution)",
        "tests": "the tests block",
    }
    output_columns = EXECUTED_COLUMNS

    def __init__(self, config: ExecuteConfig, pipeline_config: Any):
        super().__init__(config, pipeline_config)
        self._session: SandboxSession | None = None

    def preflight_checks(self, ctx) -> list:
        """The Docker engine answers and the sandbox image is there."""
        return sandbox_preflight(self.name, f"stages.{self.name}.sandbox", self.config.sandbox)

    def setup(self) -> None:
        """Start the sandbox (building its image if missing); no Docker engine is a clear error here."""
        if self._session is None:
            self._session = SandboxSession(self.config.sandbox, self.run_config.work_dir).open()

    def teardown(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def rerun_reason(self, manifest: dict) -> str | None:
        """Samples that met a sandbox fault (status error) are retried by the next run."""
        faults = manifest.get("stats", {}).get("status_error", 0)
        return f"{faults} sample(s) met a sandbox fault: rerunning retries them" if faults else None

    def process_batch(self, rows: list[dict]) -> BatchResult:
        """Run the batch's programs and write every sample with its verdict."""
        self.setup()
        programs = {row["id"]: build_program(row["response"], row["tests"], self.config.drop_stdin_main)
                    for row in rows}
        bar = progress(total=len(rows), desc="execute batch", unit="programs", leave=False)
        try:
            verdicts = self._session.run(programs, on_verdict=lambda _: bar.update(1))
        finally:
            bar.close()
        result = BatchResult()
        for row in rows:
            verdict = verdicts[row["id"]]
            result.count(f"status_{verdict['status']}")
            if verdict["cached"]:
                result.count("cache_hits")
            result.keep(with_verdict({"id": row["id"], **{k: row[k] for k in CARRIED}}, verdict))
        return result
