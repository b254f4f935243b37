"""Will full fine-tuning fit? A memory estimate made before any weight is loaded.

The estimate adds up, per device, for per-device batch ``b`` and sequence
length ``s`` (``w`` bytes per weight: 2 in bfloat16, 4 in float32):

* **weights**: ``P * w`` (the model is trained in the dtype it is loaded in:
  bfloat16 on GPUs that have it, float32 on CPU);
* **gradients**: ``P * w``;
* **Adafactor state**: transformers' Adafactor keeps, in float32, a row and a
  column second-moment factor for each matrix (``rows + cols`` numbers for a
  ``rows x cols`` weight) and a full second moment only for vectors (biases,
  norms); no first moment (``beta1`` unset). Its step also makes float32
  temporaries the size of the largest tensor (the gradient and, for 16-bit
  weights, the weight upcast, and the update): counted once;
* **activations** kept for the backward pass, per layer and token, in the
  compute dtype: the norms' inputs and outputs (``4h``), the query before and
  after rotary embedding and the attention output (``3 * heads * head_dim``),
  keys before and after rotary and values (``3 * kv_heads * head_dim``), and
  the MLP's hidden activations (``4i`` for a gated MLP: gate, up, activation,
  product; ``2i`` otherwise: projection, activation). Without a fused
  attention kernel (CPU), the attention probabilities add
  ``2 * heads * s`` per token. With gradient checkpointing only each layer's
  input (``h`` per token) is kept, plus one layer's activations while it is
  recomputed;
* **logits**: ``b * s * vocab`` in the compute dtype, their float32 copy for
  the loss and its gradient;
* a fixed **overhead** for the framework (1 GiB on CUDA, 0.5 GiB on CPU).

Shapes come from a small table of known architectures (no download), or
from a local model directory: its safetensors headers when present (exact
tensor shapes), else its ``config.json``. It is an estimate: allocator
fragmentation and kernel workspaces can add some percent.

``python -m pipeline.training.memory --model starcoder2-15b --seq-len 1280 --batch 1 --bf16``
prints the estimate for the paper's settings; ``--table`` the fit of every
multi-GPU layout (DDP, FSDP, ZeRO-3, offload, LoRA, QLoRA) on 1/2/4/8 GPUs of
24/40/80 GB (:mod:`pipeline.training.layouts`); ``--layout L --gpus N`` one
layout's parts.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.framework.errors import PipelineError

GIB = 1024**3


@dataclass
class ModelShape:
    """What the estimate needs to know about a decoder-only model."""

    name: str
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    gated_mlp: bool
    tensors: list[tuple[int, ...]] = field(default_factory=list, repr=False)
    """The shape of every trainable tensor."""

    @property
    def n_params(self) -> int:
        """Number of trainable parameters."""
        return sum(math.prod(t) for t in self.tensors)

    def with_extra_tokens(self, extra: int) -> "ModelShape":
        """The shape after adding ``extra`` rows to the embeddings (and an untied output layer)."""
        if extra <= 0:
            return self
        tensors = [(t[0] + extra, *t[1:]) if len(t) == 2 and t[0] == self.vocab else t for t in self.tensors]
        return ModelShape(self.name, self.n_layers, self.hidden, self.n_heads, self.n_kv_heads, self.head_dim,
                          self.intermediate, self.vocab + extra, self.gated_mlp, tensors)


def analytic_tensors(n_layers: int, hidden: int, n_heads: int, n_kv_heads: int, head_dim: int, intermediate: int,
                     vocab: int, *, gated_mlp: bool, bias: bool, norm_bias: bool, tied: bool) -> list[tuple[int, ...]]:
    """Tensor shapes of a standard pre-norm decoder (embeddings, attention, MLP, norms, output layer)."""
    q, kv = n_heads * head_dim, n_kv_heads * head_dim
    layer: list[tuple[int, ...]] = [(q, hidden), (kv, hidden), (kv, hidden), (hidden, q)]
    if bias:
        layer += [(q,), (kv,), (kv,), (hidden,)]
    if gated_mlp:
        layer += [(intermediate, hidden), (intermediate, hidden), (hidden, intermediate)]
        if bias:
            layer += [(intermediate,), (intermediate,), (hidden,)]
    else:
        layer += [(intermediate, hidden), (hidden, intermediate)]
        if bias:
            layer += [(intermediate,), (hidden,)]
    norms = [(hidden,), (hidden,)] * (2 if norm_bias else 1)
    tensors = [(vocab, hidden)] + (layer + norms) * n_layers + [(hidden,)] * (2 if norm_bias else 1)
    if not tied:
        tensors.append((vocab, hidden))
    return tensors


def _starcoder2_15b() -> ModelShape:
    """StarCoder2-15B as its published config.json describes it (bigcode/starcoder2-15b)."""
    dims = dict(n_layers=40, hidden=6144, n_heads=48, n_kv_heads=4, head_dim=128, intermediate=24576, vocab=49152)
    tensors = analytic_tensors(**dims, gated_mlp=False, bias=True, norm_bias=True, tied=False)
    return ModelShape("starcoder2-15b", **dims, gated_mlp=False, tensors=tensors)


KNOWN_MODELS = {"starcoder2-15b": _starcoder2_15b}
ALIASES = {"bigcode/starcoder2-15b": "starcoder2-15b"}
GATED_TYPES = ("llama", "mistral", "qwen", "gemma", "phi3", "olmo", "granite", "deepseek")


def shape_from_config(config: dict, name: str) -> ModelShape:
    """A model's shape computed from its ``config.json`` (common Llama/StarCoder2-style field names)."""
    cfg = config.get("text_config", config)
    try:
        hidden = cfg.get("hidden_size") or cfg["n_embd"]
        n_layers = cfg.get("num_hidden_layers") or cfg["n_layer"]
        n_heads = cfg.get("num_attention_heads") or cfg["n_head"]
        vocab = cfg["vocab_size"]
    except KeyError as exc:
        raise PipelineError(f"{name}: config.json lacks {exc.args[0]}; cannot estimate its memory") from None
    n_kv = cfg.get("num_key_value_heads") or n_heads
    head_dim = cfg.get("head_dim") or hidden // n_heads
    intermediate = cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * hidden
    model_type = str(cfg.get("model_type", ""))
    gated = model_type.startswith(GATED_TYPES)
    bias = bool(cfg.get("use_bias", cfg.get("attention_bias", False)))
    tied = bool(config.get("tie_word_embeddings", cfg.get("tie_word_embeddings", True)))
    tensors = analytic_tensors(n_layers, hidden, n_heads, n_kv, head_dim, intermediate, vocab, gated_mlp=gated,
                               bias=bias, norm_bias=model_type.startswith("starcoder2"), tied=tied)
    return ModelShape(name, n_layers, hidden, n_heads, n_kv, head_dim, intermediate, vocab, gated, tensors)


def safetensors_shapes(folder: Path) -> list[tuple[int, ...]]:
    """Shapes of every tensor in a folder's ``*.safetensors`` files, read from their headers only."""
    shapes: list[tuple[int, ...]] = []
    for path in sorted(folder.glob("*.safetensors")):
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        shapes += [tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"]
    return shapes


def shape_from_dir(folder: str | Path) -> ModelShape:
    """A local model's shape: dimensions from ``config.json``, tensors from safetensors headers when present."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise PipelineError(f"{folder}: no config.json; cannot estimate the model's memory")
    shape = shape_from_config(json.loads(config_path.read_text()), folder.name)
    tensors = safetensors_shapes(folder)
    if tensors:
        shape.tensors = tensors
    return shape


def shape_from_gguf(path: str | Path) -> ModelShape:
    """A GGUF model's shape from its header alone: dimensions from the metadata, tensors from their infos."""
    from pipeline.llm.gguf_header import read_gguf_header

    meta, tensors = read_gguf_header(path, tensors=True)
    arch = str(meta.get("general.architecture", ""))

    def field(key: str, default: int | None = None) -> int:
        value = meta.get(f"{arch}.{key}", default)
        if not isinstance(value, int):
            raise PipelineError(f"{path}: the GGUF header lacks {arch}.{key}; cannot estimate the model's memory")
        return value

    hidden, n_heads = field("embedding_length"), field("attention.head_count")
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = tokens.length if hasattr(tokens, "length") else field("vocab_size")
    return ModelShape(Path(path).stem, field("block_count"), hidden, n_heads, field("attention.head_count_kv", n_heads),
                      field("attention.key_length", hidden // n_heads), field("feed_forward_length"), vocab,
                      arch.startswith(GATED_TYPES), list(tensors.values()))


def lookup(model: str) -> ModelShape | None:
    """The shape of a known architecture, a local model directory or a ``.gguf`` file; None when none of these."""
    key = ALIASES.get(model, model).lower()
    if key in KNOWN_MODELS:
        return KNOWN_MODELS[key]()
    if Path(model).is_dir():
        return shape_from_dir(model)
    if model.lower().endswith(".gguf") and Path(model).is_file():
        return shape_from_gguf(model)
    return None


@dataclass
class Estimate:
    """Estimated bytes per device, by component."""

    model: str
    n_params: int
    seq_len: int
    batch: int
    bf16: bool
    weights: int
    gradients: int
    optimizer_state: int
    optimizer_step: int
    activations: int
    activations_checkpointed: int
    logits: int
    overhead: int

    def total(self, checkpointing: bool) -> int:
        """Total bytes with or without gradient checkpointing."""
        acts = self.activations_checkpointed if checkpointing else self.activations
        return (self.weights + self.gradients + self.optimizer_state + self.optimizer_step + acts + self.logits
                + self.overhead)


def estimate(shape: ModelShape, seq_len: int, batch: int, *, bf16: bool, fused_attention: bool,
             cuda: bool) -> Estimate:
    """Estimate full fine-tuning memory with Adafactor for ``shape`` at ``batch`` x ``seq_len`` tokens."""
    w = 2 if bf16 else 4
    n = shape.n_params
    state = sum(4 * (math.prod(t[:-1]) + math.prod(t[:-2]) * t[-1]) if len(t) >= 2 else 4 * t[0]
                for t in shape.tensors)
    largest = max((math.prod(t) for t in shape.tensors), default=0)
    step = largest * 4 * (3 if bf16 else 2)
    tokens = batch * seq_len
    q, kv = shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim
    per_token = 4 * shape.hidden + 3 * q + 3 * kv + (4 if shape.gated_mlp else 2) * shape.intermediate
    if not fused_attention:
        per_token += 2 * shape.n_heads * seq_len
    layer = tokens * per_token * w
    full = shape.n_layers * layer
    checkpointed = shape.n_layers * tokens * shape.hidden * w + layer
    logits = tokens * shape.vocab * (w + 4 + 4)
    return Estimate(shape.name, n, seq_len, batch, bf16, n * w, n * w, state, step, full, checkpointed, logits,
                    GIB if cuda else GIB // 2)


def available_memory() -> tuple[int, str]:
    """Bytes one training process can use, and where: free memory of CUDA device 0, else the host's available RAM."""
    try:
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info(0)
            return free, f"CUDA device 0 ({torch.cuda.get_device_name(0)}, {total / GIB:.1f} GiB)"
    except Exception:  # no usable torch/CUDA: fall back to host memory
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "host RAM (MemAvailable)"
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"), "host RAM"


def _count(n: int) -> str:
    """A parameter count as 15.96B or 4.2M."""
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _gib(n: int) -> str:
    """Bytes as GiB with two decimals."""
    return f"{n / GIB:8.2f} GiB"


def format_estimate(est: Estimate, checkpointing: bool) -> str:
    """A small table of the estimate, both activation variants, and the total for the chosen one."""
    dtype = "bfloat16" if est.bf16 else "float32"
    rows = [
        f"memory estimate: {est.model}, {_count(est.n_params)} parameters ({est.n_params:,}), {dtype}, "
        f"batch {est.batch} x {est.seq_len} tokens, Adafactor",
        f"  weights                          {_gib(est.weights)}",
        f"  gradients                        {_gib(est.gradients)}",
        f"  Adafactor state (factored)       {_gib(est.optimizer_state)}",
        f"  Adafactor step temporaries       {_gib(est.optimizer_step)}",
        f"  activations, no checkpointing    {_gib(est.activations)}",
        f"  activations, checkpointing       {_gib(est.activations_checkpointed)}",
        f"  logits and loss                  {_gib(est.logits)}",
        f"  framework overhead               {_gib(est.overhead)}",
        f"  total with checkpointing         {_gib(est.total(True))}" + ("  <- configured" if checkpointing else ""),
        f"  total without checkpointing      {_gib(est.total(False))}" + ("" if checkpointing else "  <- configured"),
    ]
    return "\n".join(rows)


def check_fit(est: Estimate, checkpointing: bool, available: int, where: str) -> None:
    """Raise a one-line :class:`PipelineError` when the estimate exceeds the available memory."""
    need = est.total(checkpointing)
    if need <= available:
        return
    hints = [] if checkpointing else ["turn on gradient_checkpointing"]
    hints += ["lower max_length or per_device_batch_size", "use a device with more memory"]
    raise PipelineError(
        f"finetune: {est.model} does not fit: full fine-tuning needs about {need / GIB:.1f} GiB "
        f"(weights {est.weights / GIB:.1f}, gradients {est.gradients / GIB:.1f}, "
        f"Adafactor {(est.optimizer_state + est.optimizer_step) / GIB:.1f}, activations and logits "
        f"{((est.activations_checkpointed if checkpointing else est.activations) + est.logits) / GIB:.1f}) "
        f"but {where} has {available / GIB:.1f} GiB available; {', '.join(hints)} "
        "(or set stages.finetune.fit_check=false to try anyway)"
    )


def main(argv: list[str] | None = None) -> int:
    """Command line: print the estimate for a known architecture or a local model directory."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.training.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True,
                        help=f"a known architecture ({', '.join(KNOWN_MODELS)}) or a local model directory")
    parser.add_argument("--seq-len", type=int, default=1280, help="tokens per sequence (default 1280)")
    parser.add_argument("--batch", type=int, default=1, help="sequences per device per step (default 1)")
    parser.add_argument("--bf16", action="store_true", help="weights and gradients in bfloat16 (else float32)")
    parser.add_argument("--no-checkpointing", action="store_true", help="mark the total without checkpointing")
    parser.add_argument("--cpu", action="store_true", help="no fused attention kernel, CPU overhead")
    parser.add_argument("--check", action="store_true", help="also compare with this machine's memory")
    parser.add_argument("--table", action="store_true",
                        help="print which layout (ddp, fsdp, zero3, offload, lora, qlora) fits on 1/2/4/8 GPUs of "
                             "24/40/80 GB instead")
    parser.add_argument("--layout", help="print one layout's estimate (with --gpus)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs for --layout (default 1)")
    args = parser.parse_args(argv)
    shape = lookup(args.model)
    if shape is None:
        print(f"error: unknown model {args.model!r}: give a local model directory or one of "
              f"{', '.join(KNOWN_MODELS)}", file=sys.stderr)
        return 2
    if args.table or args.layout:
        from pipeline.training import layouts

        options = dict(seq_len=args.seq_len, batch=args.batch, bf16=args.bf16, checkpointing=not args.no_checkpointing)
        if args.layout and args.layout not in layouts.LAYOUTS:
            print(f"error: unknown layout {args.layout!r}; known: {', '.join(layouts.LAYOUTS)}", file=sys.stderr)
            return 2
        print(layouts.fit_table(shape, **options) if args.table else
              layouts.describe(layouts.layout_estimate(shape, args.layout, max(args.gpus, 1), **options)))
        return 0
    est = estimate(shape, args.seq_len, args.batch, bf16=args.bf16, fused_attention=not args.cpu, cuda=not args.cpu)
    checkpointing = not args.no_checkpointing
    print(format_estimate(est, checkpointing))
    if args.check:
        available, where = available_memory()
        try:
            check_fit(est, checkpointing, available, where)
            print(f"fits: {where} has {available / GIB:.1f} GiB available")
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
