"""Finding the checkpoint to resume from after a crash.

The Trainer writes a checkpoint folder piece by piece (weights, optimizer,
scheduler, RNG state) and its ``trainer_state.json`` last, so a folder
without that file is one a crash interrupted. Such folders are removed (the
Trainer's own rotation would otherwise count them) and the newest complete
one is resumed from.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

log = logging.getLogger("pipeline.finetune")
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
COMPLETE_MARKER = "trainer_state.json"


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint folder under ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := CHECKPOINT.match(p.name))]
    return sorted(found)


def last_complete_checkpoint(folder: str | Path) -> Path | None:
    """The newest checkpoint whose state file was written; incomplete ones are deleted."""
    latest = None
    for step, path in checkpoints(Path(folder)):
        if (path / COMPLETE_MARKER).is_file():
            latest = path
        else:
            log.warning("finetune: removing the incomplete checkpoint %s (a crash interrupted it)", path)
            shutil.rmtree(path, ignore_errors=True)
    return latest
