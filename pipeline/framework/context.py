"""What a running stage can reach: its store, its upstream's store, the config, the executor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.framework.errors import PipelineError
from pipeline.framework.store import StageStore


@dataclass
class StageContext:
    """Everything the framework hands a stage while it runs."""

    pipeline_config: Any
    stage_name: str
    upstream_name: str | None
    executor: Any
    input_override: str | None = None
    source: Any = None
    """The stage's input source, set by the runner before the stage runs."""

    @property
    def work_dir(self) -> Path:
        """The run's work directory."""
        return Path(self.pipeline_config.run.work_dir)

    @property
    def store(self) -> StageStore:
        """This stage's own output folder."""
        return StageStore(self.work_dir, self.stage_name)

    def upstream_store(self) -> StageStore:
        """The upstream stage's output folder (a stage reads its upstream only through this)."""
        if self.upstream_name is None:
            raise PipelineError(f"stage {self.stage_name} has no upstream stage: give --input")
        return StageStore(self.work_dir, self.upstream_name)

    def stage_store(self, name: str) -> StageStore:
        """Any stage's output folder by name (for stages that also read an earlier stage, like evaluate)."""
        return StageStore(self.work_dir, name)
