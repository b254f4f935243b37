"""The processes of a multi-process launch (``accelerate launch``, ``torchrun``): who is main, and waiting.

A launcher starts the same command once per device and tells each process
its place through the environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``). The framework uses that to keep one writer: only the main
process (rank 0) clears and begins a stage's folder, writes its manifest and
logs to the run's log file; the others wait for it at a barrier. A stage runs
under such a launch only when it says it can (``Stage.multi_process``).

The barrier uses the launch's process group (initialised through
accelerate's ``PartialState``: gloo on CPU, NCCL on CUDA), the same one the
Trainer uses later, so nothing here starts when the process runs alone.
"""

from __future__ import annotations

import os


def world_size() -> int:
    """Processes in this launch (1 when not launched by a multi-process launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global index in the launch (0 when alone)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True for the one process that writes shared files (rank 0, or a process launched alone)."""
    return rank() == 0


def wait_for_everyone() -> None:
    """Block until every process of the launch gets here; returns at once when alone."""
    if world_size() <= 1:
        return
    import torch
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available()).wait_for_everyone()
