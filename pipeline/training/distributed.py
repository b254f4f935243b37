"""Fine-tuning under ``accelerate launch``: the batch arithmetic, the checkpoint to resume, saving once.

The recipe's effective batch is ``per_device_batch_size x
gradient_accumulation_steps`` as written for one process (1 x 64 in the
paper). With N processes each step already sees N per-device batches, so
each process accumulates ``gradient_accumulation_steps / N`` of them and the
effective batch stays the recipe's; a count that does not divide is an
error rather than a silently different recipe.

Every process must resume from the same checkpoint: the main process first
removes the folders a crash left half written, then all of them pick the
newest complete one. In a multi-process run, complete also means every
process's RNG file is there (each process writes its own, after the main
one wrote ``trainer_state.json``).

The model is saved by every process calling the Trainer's ``save_model``
(FSDP and ZeRO-3 gather the sharded weights collectively; only the main
process writes), and the main process alone adds the tokenizer and moves the
folder into place.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from pipeline.framework.errors import PipelineError
from pipeline.framework.processes import is_main_process, wait_for_everyone, world_size
from pipeline.training.resume import COMPLETE_MARKER, checkpoints, last_complete_checkpoint

log = logging.getLogger("pipeline.finetune")


def check_layout_device(layout: str, cuda: bool) -> None:
    """A one-line error for a sharded layout launched without GPUs (accelerate's FSDP and DeepSpeed need them)."""
    if not cuda and layout.startswith(("fsdp", "zero3")):
        raise PipelineError(f"finetune: the {layout} layout needs CUDA GPUs (accelerate runs FSDP and DeepSpeed only "
                            "on accelerators); on CPUs launch with configs/accelerate/ddp.yaml")


def accumulation_per_process(per_device: int, accumulation: int, processes: int) -> int:
    """Gradient accumulation steps per process that keep the effective batch ``per_device x accumulation``."""
    if accumulation % processes:
        raise PipelineError(
            f"finetune: gradient_accumulation_steps={accumulation} is not a multiple of the {processes} processes, "
            f"so the effective batch {per_device * accumulation} cannot be kept; choose a count that divides it")
    per_process = accumulation // processes
    if processes > 1:
        log.info("finetune: %d processes: gradient accumulation %d -> %d per process; effective batch stays "
                 "%d (%d per device x %d accumulated x %d processes)", processes, accumulation, per_process,
                 per_device * accumulation, per_device, per_process, processes)
    return per_process


def resume_checkpoint(folder: Path) -> Path | None:
    """The checkpoint every process resumes from (the same for all), or None to start afresh."""
    if is_main_process():
        last_complete_checkpoint(folder)  # removes what a crash left half written
    wait_for_everyone()
    processes = world_size()
    latest = last_complete_checkpoint(folder)
    if processes <= 1 or latest is None:
        return latest
    for _, path in reversed(checkpoints(folder)):
        missing = [r for r in range(processes) if not (path / f"rng_state_{r}.pth").is_file()]
        if (path / COMPLETE_MARKER).is_file() and not missing:
            return path
        log.warning("finetune: not resuming from %s: the state of process(es) %s is missing", path, missing)
    return None


def save_with_trainer(trainer, tokenizer, target: Path) -> Path:
    """Save the trained model (or adapter) and tokenizer to ``target``, replacing any earlier save."""
    tmp = target.with_name(f".{target.name}.tmp")
    if is_main_process() and tmp.exists():
        shutil.rmtree(tmp)
    wait_for_everyone()
    trainer.save_model(str(tmp))
    wait_for_everyone()
    if is_main_process():
        tokenizer.save_pretrained(str(tmp))
        (tmp / "training_args.bin").unlink(missing_ok=True)
        replace_dir(tmp, target)
    return target


def save_plain(model, tokenizer, target: Path) -> Path:
    """Save a model that lives in this (main) process and its tokenizer to ``target``, replacing any earlier save."""
    tmp = target.with_name(f".{target.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    return replace_dir(tmp, target)


def replace_dir(tmp: Path, target: Path) -> Path:
    """Move the finished folder ``tmp`` to ``target``, removing an older ``target``."""
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target
