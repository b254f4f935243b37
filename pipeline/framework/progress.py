"""Progress bars and run logs.

Every long loop shows a tqdm bar with rate and ETA. On a terminal the bar
redraws in place; in a log or CI (no TTY) it prints a line every 30 seconds
instead of flooding the output.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from pipeline.framework.processes import is_main_process


def progress(total: int | None = None, desc: str = "", unit: str = "rows", **kwargs) -> tqdm:
    """A progress bar with rate and ETA that stays quiet in non-interactive output."""
    interactive = sys.stderr.isatty()
    options = dict(
        dynamic_ncols=True, mininterval=0.5 if interactive else 30.0, smoothing=0.1, leave=interactive, file=sys.stderr
    )
    options.update(kwargs)
    return tqdm(total=total, desc=desc, unit=unit, **options)


def setup_logging(work_dir: Path | None, level: str = "INFO") -> Path | None:
    """Log to the console and, when a work dir is known, to ``work_dir/logs/run-<time>.log``.

    In a multi-process launch only the main process logs everything; the others print warnings only.

    Returns the log file's path.
    """
    root = logging.getLogger("pipeline")
    root.setLevel(logging.DEBUG)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(getattr(logging, level.upper(), logging.INFO))
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root.addHandler(console)
    if not is_main_process():  # the other processes of a multi-process launch: warnings only, no log file
        console.setLevel(max(console.level, logging.WARNING))
        return None
    if work_dir is None:
        return None
    logs = Path(work_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setLevel(logging.DEBUG)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(file_handler)
    return path
