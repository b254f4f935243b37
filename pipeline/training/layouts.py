"""Memory per GPU for each way of spreading fine-tuning over GPUs, and the fit table.

Starting from the one-device estimate (:func:`pipeline.training.memory.estimate`),
for ``N`` GPUs:

* **single / ddp**: every GPU holds the whole model, its gradients and the
  optimizer state; DDP adds its gradient buckets (a second copy of the
  gradients, transformers' default ``gradient_as_bucket_view=False``).
* **fsdp** (full shard, weights kept in the dtype they were loaded in):
  weights, gradients and optimizer state divided by ``N``, plus the working
  set of gathered layers: the layer being computed and the one prefetched
  (full weights) and one layer's full gradients before the reduce-scatter.
  The Adafactor step runs on the shards, so its temporaries shrink too.
* **zero3** (DeepSpeed ZeRO-3 with bf16): as fsdp, plus DeepSpeed's float32
  master copy of the weights and float32 gradient partition (``4P/N`` each).
* **+offload**: FSDP's CPU offload moves the sharded weights, gradients and
  optimizer to host memory; ZeRO-3's optimizer offload moves the master copy,
  gradient partition and optimizer state. Host bytes are reported separately.
* **lora / qlora** (one process per GPU): frozen base weights (bfloat16, or
  4-bit NF4 for the linear layers under QLoRA: about 0.52 bytes a weight with
  its quantisation constants), and for the adapter alone weights, gradients
  and Adafactor state; activations and logits as for full fine-tuning.

Activations and logits depend on the per-GPU batch and are never sharded.
Cards are compared by their nominal size in GiB (a "24 GB" card holds 24 GiB).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from pipeline.framework.errors import PipelineError
from pipeline.training.memory import GIB, ModelShape, estimate

LAYOUTS = ("ddp", "fsdp", "fsdp+offload", "zero3", "zero3+offload", "lora", "qlora")
NF4_BYTES = 0.52  # 4-bit weights with double-quantised block constants


@dataclass
class LayoutEstimate:
    """Bytes per GPU (and on the host) for one layout over ``gpus`` GPUs."""

    layout: str
    gpus: int
    parts: dict[str, int]
    host: int = 0

    @property
    def per_gpu(self) -> int:
        """Total bytes each GPU needs."""
        return sum(self.parts.values())


def lora_params(shape: ModelShape, rank: int) -> list[tuple[int, int]]:
    """Shapes ``(r, in) + (out, r)`` of the adapter matrices on every linear layer but the output layer."""
    return [m for t in shape.tensors if len(t) == 2 and t[0] != shape.vocab for m in ((rank, t[1]), (t[0], rank))]


def layer_bytes(shape: ModelShape, w: int) -> int:
    """Bytes of one transformer layer's weights."""
    per_layer = shape.n_params - sum(math.prod(t) for t in shape.tensors if t and t[0] == shape.vocab)
    return per_layer * w // shape.n_layers


def launched_layout(adapter: str) -> str:
    """The layout of this process's launch, from the variables ``accelerate launch`` sets (ddp when alone)."""
    if adapter in ("lora", "qlora"):
        return adapter
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        offload = os.environ.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none").lower() not in ("", "none")
        return "zero3+offload" if offload else "zero3"
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp+offload" if os.environ.get("FSDP_OFFLOAD_PARAMS", "").lower() == "true" else "fsdp"
    return "ddp"


def check_layout_fit(est: LayoutEstimate, available: int, where: str) -> None:
    """Raise a one-line :class:`PipelineError` when one GPU's share exceeds the available memory."""
    if est.per_gpu <= available:
        return
    biggest = ", ".join(f"{k} {v / GIB:.1f}" for k, v in sorted(est.parts.items(), key=lambda kv: -kv[1])[:3])
    raise PipelineError(
        f"finetune: {est.layout} over {est.gpus} process(es) needs about {est.per_gpu / GIB:.1f} GiB per device "
        f"({biggest}) but {where} has {available / GIB:.1f} GiB available; see "
        "`python -m pipeline.training.memory --model M --bf16 --table` for layouts that fit "
        "(or set stages.finetune.fit_check=false to try anyway)")


def describe(est: LayoutEstimate) -> str:
    """The parts of one layout's estimate, one per line."""
    rows = [f"{est.layout} over {est.gpus} GPU(s): {est.per_gpu / GIB:.2f} GiB per GPU"]
    rows += [f"  {name:<24} {value / GIB:8.2f} GiB" for name, value in est.parts.items()]
    if est.host:
        rows.append(f"  {'on the host (offload)':<24} {est.host / GIB:8.2f} GiB")
    return "\n".join(rows)


def layout_estimate(shape: ModelShape, layout: str, gpus: int, *, seq_len: int = 1280, batch: int = 1,
                    bf16: bool = True, checkpointing: bool = True, lora_rank: int = 16,
                    cuda: bool = True) -> LayoutEstimate:
    """Bytes per GPU for ``layout`` over ``gpus`` GPUs at ``batch`` x ``seq_len`` tokens, Adafactor.

    ``cuda=False`` models a CPU process (no fused attention kernel, smaller framework overhead).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    est = estimate(shape, seq_len, batch, bf16=bf16, fused_attention=cuda, cuda=cuda)
    w = 2 if bf16 else 4
    acts = est.activations_checkpointed if checkpointing else est.activations
    common = {"activations": acts, "logits": est.logits, "overhead": est.overhead}
    if layout == "ddp":
        parts = {"weights": est.weights, "gradients": est.gradients, "optimizer": est.optimizer_state + est.optimizer_step,
                 "ddp buckets": est.gradients if gpus > 1 else 0}
        return LayoutEstimate(layout, gpus, parts | common)
    if layout in ("lora", "qlora"):
        adapter = lora_params(shape, lora_rank)
        n_adapter = sum(a * b for a, b in adapter)
        if layout == "qlora":
            linear = sum(math.prod(t) for t in shape.tensors if len(t) == 2 and t[0] != shape.vocab)
            base = int(linear * NF4_BYTES + (shape.n_params - linear) * 2)
        else:
            base = est.weights
        state = sum(4 * (a + b) for a, b in adapter)
        parts = {"weights": base + n_adapter * w, "gradients": n_adapter * w, "optimizer": state}
        return LayoutEstimate(layout, gpus, parts | common)
    sharded, host = {}, 0
    sharded["weights"], sharded["gradients"] = est.weights, est.gradients
    sharded["optimizer"] = est.optimizer_state + est.optimizer_step
    if layout.startswith("zero3") and bf16:
        sharded["fp32 master + grads"] = 8 * est.n_params
    sharded = {k: math.ceil(v / gpus) for k, v in sharded.items()}
    if layout == "fsdp+offload":
        host = sum(sharded.values())
        sharded = dict.fromkeys(sharded, 0)
    elif layout == "zero3+offload":
        host = sharded["optimizer"] + sharded.get("fp32 master + grads", 0)
        sharded["optimizer"] = 0
        sharded["fp32 master + grads"] = 0
    gathered = 3 * layer_bytes(shape, w) if gpus > 1 or "offload" in layout else 0
    parts = {**sharded, "gathered layers": gathered} | common
    return LayoutEstimate(layout, gpus, parts, host)


def fit_table(shape: ModelShape, *, gpu_counts=(1, 2, 4, 8), cards_gib=(24, 40, 80), seq_len: int = 1280,
              batch: int = 1, bf16: bool = True, checkpointing: bool = True, lora_rank: int = 16) -> str:
    """The table: GiB per GPU for each layout and GPU count, and which card sizes it fits on."""
    head = f"{'layout':<14}" + "".join(f"{f'{n} GPU' + ('s' if n > 1 else ''):>20}" for n in gpu_counts)
    lines = [
        f"fit table: {shape.name}, full fine-tuning with Adafactor unless lora/qlora (r={lora_rank}), "
        f"{'bfloat16' if bf16 else 'float32'}, batch {batch} x {seq_len} tokens per GPU, "
        f"{'with' if checkpointing else 'without'} gradient checkpointing",
        "cell: GiB needed per GPU, then the card sizes (GiB) it fits on; [host GiB per GPU] with offload",
        head,
    ]
    for layout in LAYOUTS:
        cells = []
        for n in gpu_counts:
            est = layout_estimate(shape, layout, n, seq_len=seq_len, batch=batch, bf16=bf16,
                                  checkpointing=checkpointing, lora_rank=lora_rank)
            fits = ",".join(str(c) for c in cards_gib if est.per_gpu <= c * GIB) or "none"
            host = f" [{est.host / GIB:.0f}]" if est.host else ""
            cells.append(f"{est.per_gpu / GIB:.1f} {fits}{host}")
        lines.append(f"{layout:<14}" + "".join(f"{c:>20}" for c in cells))
    return "\n".join(lines)


def fit_report(shape: ModelShape, layout: str, gpus: int, *, check: bool, **options) -> dict:
    """Estimate one process's share for ``layout``, log it, check it against this device; return the facts."""
    import logging

    from pipeline.training.memory import available_memory

    est = layout_estimate(shape, layout, gpus, **options)
    log = logging.getLogger("pipeline.finetune")
    for line in describe(est).splitlines():
        log.info("finetune: memory: %s", line)
    available, where = available_memory()
    if check:
        check_layout_fit(est, available, where)
    return {"layout": layout, "processes": gpus, "n_params": shape.n_params,
            "needed_gib": round(est.per_gpu / GIB, 2), "available_gib": round(available / GIB, 2), "device": where,
            **{f"{k.replace(' ', '_').replace('+', 'and')}_gib": round(v / GIB, 2) for k, v in est.parts.items()},
            "host_gib": round(est.host / GIB, 2)}
