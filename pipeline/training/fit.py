"""Will the fine-tune fit? The finetune stage's memory estimate: logged and checked before training, summed up
for the manifest, and checked by ``--preflight`` without loading a weight.

Full fine-tuning on one device is estimated by :mod:`pipeline.training.memory` (Adafactor's factored state,
or AdamW's two moments); adapters and multi-process layouts by :mod:`pipeline.training.layouts`. Full-weight
DPO also holds the frozen reference policy, a second copy of the weights.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from pipeline.training import layouts, memory

log = logging.getLogger("pipeline.finetune")


def with_reference(cfg: Any, est: memory.Estimate) -> memory.Estimate:
    """The estimate with the frozen reference policy of full-weight DPO (a second copy of the weights)."""
    if cfg.preference and cfg.adapter == "none":
        return dataclasses.replace(est, weights=2 * est.weights)
    return est


def full_estimate(cfg: Any, shape: memory.ModelShape, bf16: bool, cuda: bool) -> memory.Estimate:
    """The memory of full fine-tuning ``shape`` with the settings ``cfg`` on one device."""
    return with_reference(cfg, memory.estimate(shape, cfg.max_length, cfg.forward_batch(), bf16=bf16,
                                               fused_attention=cuda, cuda=cuda))


def fit_summary(cfg: Any, model_dir: str, name: str, added_tokens: int, processes: int, bf16: bool,
                cuda: bool) -> dict | None:
    """Estimate, log and check (``fit_check``) the memory need of training the model in ``model_dir`` (``name``
    as configured) with ``added_tokens`` new tokens; the manifest's ``fit_estimate`` in GiB, or None when the
    model's shape is unknown here."""
    shape = memory.lookup(model_dir) or memory.lookup(name)
    if shape is None:
        log.warning("finetune: no local config for %s: memory not estimated", model_dir)
        return None
    shape = shape.with_extra_tokens(added_tokens)
    if cfg.adapter != "none" or processes > 1:
        return layouts.fit_report(shape, layouts.launched_layout(cfg.adapter), processes, check=cfg.fit_check,
                                  seq_len=cfg.max_length, batch=cfg.forward_batch(), bf16=bf16, lora_rank=cfg.lora_r,
                                  checkpointing=cfg.gradient_checkpointing, cuda=cuda)
    est = full_estimate(cfg, shape, bf16, cuda)
    if cfg.optimizer == "adamw_torch":  # two full fp32 moments per parameter instead of Adafactor's factored state
        est = dataclasses.replace(est, optimizer_state=8 * est.n_params)
    for line in memory.format_estimate(est, cfg.gradient_checkpointing).splitlines():
        log.info(line)
    available, where = memory.available_memory()
    if cfg.fit_check:
        memory.check_fit(est, cfg.gradient_checkpointing, available, where)
    gib = memory.GIB
    return {"n_params": est.n_params, "needed_gib": round(est.total(cfg.gradient_checkpointing) / gib, 2),
            "available_gib": round(available / gib, 2), "device": where,
            "weights_gib": round(est.weights / gib, 2), "gradients_gib": round(est.gradients / gib, 2),
            "optimizer_gib": round((est.optimizer_state + est.optimizer_step) / gib, 2),
            "activations_gib": round(est.activations / gib, 2),
            "activations_checkpointed_gib": round(est.activations_checkpointed / gib, 2),
            "logits_gib": round(est.logits / gib, 2)}


def memory_check(cfg: Any, stage: str, name: str, cache_dir) -> Any:
    """``--preflight``'s row: full fine-tuning's estimated memory against ``device_memory_gib``, else this machine."""
    from pipeline.framework.preflight import FAIL, INFO, OK, WARN, Check
    from pipeline.llm.models import gguf_cache_path, is_gguf, resolve_model

    try:
        source = resolve_model(name)
    except Exception as exc:  # the model's package is missing: the run would fail too
        return Check(stage, "memory fit", "model not found", name, FAIL, f"{stage}: {name}: {exc}")
    cached = gguf_cache_path(source, cache_dir, "float32") if is_gguf(source) else None
    shape = memory.lookup(str(cached)) if cached and cached.is_dir() else memory.lookup(source)
    shape = shape or memory.lookup(name)
    if shape is None:
        return Check(stage, "memory fit", f"not estimated: no local config for {name}", "", INFO)
    if cfg.device_memory_gib is not None:
        available, where, cuda = int(cfg.device_memory_gib * memory.GIB), f"stages.{stage}.device_memory_gib", True
    else:
        available, where = memory.available_memory()
        cuda = where.startswith("CUDA")
    bf16 = cfg.bf16 and cuda
    need = full_estimate(cfg, shape, bf16, cuda).total(cfg.gradient_checkpointing)
    gib = memory.GIB
    measured = (f"{need / gib:,.1f} GiB ({shape.name}, {'bfloat16' if bf16 else 'float32'}, "
                f"batch {cfg.per_device_batch_size} x {cfg.max_length})")
    limit = f"{available / gib:,.1f} GiB ({where})"
    if need <= available:
        return Check(stage, "memory fit", measured, limit, OK)
    problem = (f"{stage}: full fine-tuning needs about {need / gib:,.1f} GiB > {where} {available / gib:,.1f} "
               f"GiB (lower stages.{stage}.max_length or per_device_batch_size, or set device_memory_gib for "
               "the training GPU)")
    return Check(stage, "memory fit", measured, limit, FAIL if cfg.fit_check else WARN, problem)
