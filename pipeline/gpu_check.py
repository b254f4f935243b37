"""The GPU check: fine-tuning memory, speed and generation on one CUDA GPU, nothing downloaded.

``scripts/gpu_check.sh`` (from the repository root) runs ``python -m
pipeline.gpu_check`` and prints one table, also written as JSON:

1. **train-3b**: full fine-tuning of a StarCoder2-shaped model of about 3B
   parameters (StarCoder2-3B's published dimensions, random weights built
   from the config) in bfloat16 at sequence length 1280 with gradient
   checkpointing and Adafactor, through the finetune stage's own pieces
   (model loading with dropout forced to 0, the instruction chat format with
   answer-only labels, the padding collator, transformers' Trainer): peak
   memory against :mod:`pipeline.training.layouts`' estimate, tokens per
   second and model-FLOPs utilisation (``6N + 12 * layers * heads * head_dim
   * seq`` FLOPs per token, against the card's dense bf16 peak).
2. **stage-3b**: the finetune stage itself (``Runner.run_stage``: the
   store, its own fit estimate and check, bf16 on CUDA, the saved model) on
   the same model for 4 steps, where the pipeline's other dependencies
   (pyarrow, pydantic, ...) are importable; otherwise the row says which is
   missing.
3. **train-15b**: where the card has the memory the estimate asks for, a few
   optimizer steps of the real StarCoder2-15B shape at the paper's settings
   (sequence 1280, batch 1, Adafactor, checkpointing, bfloat16); its peak set
   against the estimate (65.2 GiB, "fits one A100 80GB"). An out-of-memory
   error is a result too, and reported as one.
4. **lora-3b**: the 3B model with a LoRA adapter (r 16, every linear layer).
5. **generate-bs1 / generate-bs32**: greedy generation of 128 new tokens
   through the pipeline's transformers backend on CUDA from the saved 3B
   model, tokens per second at batch 1 and 32.

It needs torch, transformers, accelerate and peft; the generation rows also
need pydantic (the backend's settings), which ``scripts/gpu_check.sh`` can
bring along as wheels (see that script). ``--dry`` runs the same code on the
CPU with a tiny StarCoder2-shaped model and a few steps, in a minute.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from pipeline.training.layouts import layout_estimate
from pipeline.training.memory import GIB, shape_from_config

#: StarCoder2 dimensions as bigcode's config.json files give them (3B and 15B); random weights are built from them.
STARCODER2_3B = dict(hidden_size=3072, intermediate_size=12288, num_hidden_layers=30, num_attention_heads=24,
                     num_key_value_heads=2, vocab_size=49152, tie_word_embeddings=True, rope_theta=999999.4420358813)
STARCODER2_15B = dict(hidden_size=6144, intermediate_size=24576, num_hidden_layers=40, num_attention_heads=48,
                      num_key_value_heads=4, vocab_size=49152, tie_word_embeddings=False, rope_theta=100000.0)
TINY = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=1024, tie_word_embeddings=True, rope_theta=10000.0)
#: Dense bfloat16 tensor-core peaks (TFLOP/s, no sparsity) by a substring of the device name.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0, "L40S": 362.0,
                    "L40": 181.0, "A10G": 70.0, "A10": 125.0, "L4": 121.0, "4090": 165.0}


def starcoder2_config(dims: dict, max_length: int):
    """A ``Starcoder2Config`` with ``dims``, every dropout 0 (the recipe's), long enough for ``max_length``."""
    from transformers import Starcoder2Config

    from pipeline.training.modeling import force_dropout

    config = Starcoder2Config(**dims, max_position_embeddings=max(4096, max_length), sliding_window=None,
                              use_bias=True, hidden_act="gelu_pytorch_tanh", use_cache=False, bos_token_id=0,
                              eos_token_id=0, pad_token_id=0)
    force_dropout(config, 0.0)
    return config


def build_model(config, dtype, device):
    """A causal LM with random weights made directly on ``device`` (no download, no file)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def build_tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer trained here on standard-library source, padded with filler tokens to ``vocab_size``.

    Every id the model can produce then decodes; it has an ``<eos>`` token (id 0) for the chat format.
    """
    import argparse as argparse_module
    import json as json_module

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [inspect.getsource(m) for m in (argparse_module, json_module.decoder, json_module.encoder, inspect)]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    size = min(vocab_size, 2048)
    core.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=size, special_tokens=["<eos>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<eos>")
    filler = vocab_size - len(tokenizer)
    if filler > 0:
        tokenizer.add_tokens([f"<fill{i}>" for i in range(filler)])
    return tokenizer


def conversations(tokenizer, n: int, seq_len: int) -> list[list[dict]]:
    """``n`` conversations whose answers (standard-library source) are longer than ``seq_len`` tokens."""
    code = inspect.getsource(inspect)
    out = []
    for i in range(n):
        body = code[i * 997 % len(code):] + code
        while len(tokenizer(body, add_special_tokens=False)["input_ids"]) < seq_len:
            body += code
        out.append([{"role": "user", "content": f"Explain part {i} of the inspect module."},
                    {"role": "assistant", "content": body}])
    return out


def training_rows(tokenizer, n: int, seq_len: int) -> list[dict]:
    """``n`` conversations rendered with the stage's instruction format, each truncated to exactly ``seq_len`` tokens."""
    from pipeline.training.data import ConversationEncoder, plain_rows

    encoder = ConversationEncoder(tokenizer, "instruction")
    rows = []
    for messages in conversations(tokenizer, n, seq_len):
        encoded = encoder.encode(messages, seq_len, "truncate")
        if len(encoded.input_ids) != seq_len:
            raise RuntimeError(f"gpu check: a training row has {len(encoded.input_ids)} tokens, not {seq_len} "
                               f"({encoded.status})")
        rows += plain_rows([encoded])
    return rows


def flops_per_token(shape, seq_len: int) -> float:
    """Model FLOPs per trained token: ``6N`` for the matrices plus the attention scores and values."""
    return 6 * shape.n_params + 12 * shape.n_layers * shape.n_heads * shape.head_dim * seq_len


def peak_tflops(device_name: str) -> float | None:
    """The card's dense bf16 peak in TFLOP/s, when the name is known."""
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)


class Measured:
    """Peak memory and step times of a block of work on the current CUDA device (or the wall clock on CPU)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.step_times: list[float] = []

    def __enter__(self):
        import torch

        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            self.peak_allocated = torch.cuda.max_memory_allocated()
            self.peak_reserved = torch.cuda.max_memory_reserved()
        else:
            self.peak_allocated = self.peak_reserved = 0
        self.seconds = time.perf_counter() - self.started
        return False


def step_timer(measured: Measured):
    """A Trainer callback recording when each optimizer step ends."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if measured.cuda:
                import torch

                torch.cuda.synchronize()
            measured.step_times.append(time.perf_counter())

    return StepTimer()


def train(model, tokenizer, rows: list[dict], *, steps: int, accumulation: int, bf16: bool, cuda: bool,
          out_dir: Path) -> tuple[Measured, list[float]]:
    """A few optimizer steps with the paper's optimizer and checkpointing; returns the measurements and losses."""
    from transformers import Trainer, TrainingArguments

    from pipeline.training.data import ConversationDataset, PaddingCollator

    fields = getattr(TrainingArguments, "__dataclass_fields__", {})  # transformers 5 renamed the option
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    args = TrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=1, gradient_accumulation_steps=accumulation,
        max_steps=steps, learning_rate=1e-5, lr_scheduler_type="linear", optim="adafactor", bf16=bf16,
        use_cpu=not cuda, logging_steps=1, save_strategy="no", report_to="none", dataloader_num_workers=0,
        disable_tqdm=True, seed=0, **{checkpointing: True})
    measured = Measured(cuda)
    trainer = Trainer(model=model, args=args, train_dataset=ConversationDataset(rows),
                      data_collator=PaddingCollator(tokenizer.pad_token_id, 8 if cuda else None),
                      callbacks=[step_timer(measured)])
    with measured:
        trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    del trainer
    return measured, losses


def training_row(check: str, config, layout: str, measured: Measured, *, seq_len: int, accumulation: int, bf16: bool,
                 cuda: bool, device_name: str, losses: list[float], lora_rank: int = 16) -> dict:
    """One table row: memory against the estimate, tokens per second (first step excluded), MFU."""
    shape = shape_from_config(config.to_dict(), check)
    est = layout_estimate(shape, layout, 1, seq_len=seq_len, batch=1, bf16=bf16, checkpointing=True,
                          lora_rank=lora_rank, cuda=cuda)
    times = measured.step_times
    tokens_per_step = seq_len * accumulation
    speed = tokens_per_step * (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None
    peak = peak_tflops(device_name) if cuda else None
    flops = flops_per_token(shape, seq_len) * (2 / 3 if layout == "lora" else 1)  # a frozen base: no weight grads
    mfu = speed * flops / (peak * 1e12) if speed and peak else None
    return {"check": check, "params": shape.n_params, "seq_len": seq_len, "steps": len(times),
            "estimate_gib": round(est.per_gpu / GIB, 2), "peak_allocated_gib": round(measured.peak_allocated / GIB, 2),
            "peak_reserved_gib": round(measured.peak_reserved / GIB, 2),
            "tokens_per_s": round(speed, 1) if speed else None, "mfu": round(mfu, 3) if mfu else None,
            "first_loss": round(losses[0], 3) if losses else None, "last_loss": round(losses[-1], 3) if losses else None,
            "status": "ok"}


def check_stage(model_dir: Path, tokenizer, work: Path, *, seq_len: int, steps: int, accumulation: int, cuda: bool,
                device_name: str) -> dict:
    """The finetune stage itself (store, fit check, Trainer, save) on the saved model, where its dependencies exist.

    The GPU machine usually lacks the pipeline's other dependencies (pyarrow, ...): then the row says which.
    """
    row = {"check": "stage-" + ("3b" if cuda else "tiny"), "seq_len": seq_len}
    try:
        from pipeline.cli import _model_config_class
        from pipeline.framework.config import build_config_model, validate_config
        from pipeline.framework.runner import Runner
        from pipeline.framework.stage import PlannedStage
        from stages import PIPELINE
    except ImportError as exc:
        return row | {"status": f"skipped: the pipeline's own dependencies are missing ({exc.name})"}
    data = work / "conversations.jsonl"
    data.write_text("".join(json.dumps({"id": f"c{i}", "messages": m}) + "\n"
                            for i, m in enumerate(conversations(tokenizer, steps * accumulation, seq_len))))
    recipe = {"name": "gpu-check", "run": {"work_dir": str(work / "stage")},
              "model": {"backend": "transformers", "model": str(model_dir), "device": "cuda" if cuda else "cpu"},
              "stages": {"finetune": {"max_steps": steps, "per_device_batch_size": 1, "max_length": seq_len,
                                      "gradient_accumulation_steps": accumulation, "save_steps": 10_000}}}
    model = build_config_model({e.name: None if isinstance(e, PlannedStage) else e.Config for e in PIPELINE},
                               _model_config_class())
    with Measured(cuda) as measured:
        manifest = Runner(validate_config(recipe, model, "gpu check"), PIPELINE).run_stage(
            "finetune", input_override=str(data))
    training = manifest["training"]
    shape = shape_from_config(json.loads((model_dir / "config.json").read_text()), row["check"])
    speed = training.get("tokens_per_second")
    peak = peak_tflops(device_name) if cuda else None
    return row | {"params": shape.n_params, "steps": training["global_step"],
                  "estimate_gib": (training.get("fit_estimate") or {}).get("needed_gib"),
                  "peak_allocated_gib": round(measured.peak_allocated / GIB, 2),
                  "peak_reserved_gib": round(measured.peak_reserved / GIB, 2), "tokens_per_s": speed,
                  "mfu": round(speed * flops_per_token(shape, seq_len) / (peak * 1e12), 3) if speed and peak else None,
                  "first_loss": training.get("first_loss"), "last_loss": training.get("final_loss"),
                  "bf16": training.get("bf16"), "status": "ok"}


def check_generation(model_dir: Path, batch: int, max_tokens: int, cuda: bool) -> dict:
    """Greedy generation through the pipeline's transformers backend; tokens per second at ``batch`` prompts."""
    from pipeline.llm.base import SamplingParams
    from pipeline.llm.config import LLMConfig
    from pipeline.llm.transformers_backend import TransformersBackend

    backend = TransformersBackend(LLMConfig(backend="transformers", model=str(model_dir),
                                            device="cuda" if cuda else "cpu", dtype="bfloat16" if cuda else "float32",
                                            batch_size=batch, show_progress=False))
    try:
        prompts = [f"def function_{i}(values):\n    \"\"\"Return the sum of values times {i}.\"\"\"\n" for i in range(batch)]
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
        backend.generate(prompts[:1], SamplingParams(temperature=0.0, max_tokens=4))  # warm-up
        with Measured(cuda) as measured:
            out = backend.generate(prompts, params)
        tokenizer = backend.tokenizer
        generated = sum(max_tokens if c.finish_reason == "length" else
                        len(tokenizer(c.text, add_special_tokens=False)["input_ids"]) for row in out for c in row)
    finally:
        backend.close()
    return {"check": f"generate-bs{batch}", "new_tokens": generated, "seconds": round(measured.seconds, 2),
            "tokens_per_s": round(generated / measured.seconds, 1),
            "peak_allocated_gib": round(measured.peak_allocated / GIB, 2), "status": "ok"}


def free_memory() -> None:
    """Collect what is no longer referenced and hand the GPU memory it held back to the device."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_checks(args) -> tuple[dict, list[dict]]:
    """Run every check; return the machine facts and the table rows."""
    import torch

    from pipeline.training.adapters import attach_adapter
    from pipeline.training.modeling import load_for_training

    cuda = torch.cuda.is_available() and not args.dry
    if not cuda and not args.dry:
        raise SystemExit("error: no CUDA device; run with --dry for the CPU rehearsal")
    device_name = torch.cuda.get_device_name(0) if cuda else "cpu"
    total = torch.cuda.mem_get_info(0)[1] if cuda else 0
    seq_len, steps, accumulation, gen_tokens = (256, 3, 2, 8) if args.dry else (1280, args.steps, 4, 128)
    dtype, bf16 = (torch.bfloat16, True) if cuda else (torch.float32, False)
    facts = {"device": device_name, "memory_gib": round(total / GIB, 2), "torch": torch.__version__,
             "transformers": __import__("transformers").__version__, "peft": __import__("peft").__version__,
             "dry": args.dry, "seq_len": seq_len, "dtype": str(dtype).replace("torch.", "")}
    rows: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    small = TINY if args.dry else STARCODER2_3B
    config = starcoder2_config(small, seq_len)
    tokenizer = build_tokenizer(config.vocab_size)
    data = training_rows(tokenizer, steps * accumulation, seq_len)
    name = "train-tiny" if args.dry else "train-3b"
    print(f"gpu check: {name} ({device_name})", file=sys.stderr, flush=True)
    model = build_model(config, dtype, "cuda" if cuda else "cpu")
    measured, losses = train(model, tokenizer, data, steps=steps, accumulation=accumulation, bf16=bf16, cuda=cuda,
                             out_dir=work / "train")
    rows.append(training_row(name, config, "ddp", measured, seq_len=seq_len, accumulation=accumulation, bf16=bf16,
                             cuda=cuda, device_name=device_name, losses=losses))
    model_dir = work / "model"
    model.config.use_cache = True
    model.save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    del model
    free_memory()

    print("gpu check: the finetune stage", file=sys.stderr, flush=True)
    rows.append(check_stage(model_dir, tokenizer, work, seq_len=seq_len, steps=min(steps, 4),
                            accumulation=accumulation, cuda=cuda, device_name=device_name))
    free_memory()

    print("gpu check: lora", file=sys.stderr, flush=True)
    lora_options = argparse.Namespace(adapter="lora", lora_r=16, lora_alpha=32, lora_dropout=0.0,
                                      lora_target_modules="all-linear")
    model, _ = load_for_training(str(model_dir), dtype, 0.0, len(tokenizer))
    if cuda:
        model.to("cuda")
    model = attach_adapter(model, lora_options, train_embeddings=False, checkpointing=True)
    measured, losses = train(model, tokenizer, data, steps=steps, accumulation=accumulation, bf16=bf16, cuda=cuda,
                             out_dir=work / "lora")
    rows.append(training_row(name.replace("train", "lora"), config, "lora", measured, seq_len=seq_len,
                             accumulation=accumulation, bf16=bf16, cuda=cuda, device_name=device_name, losses=losses))
    del model
    free_memory()

    for batch in (1, 4 if args.dry else 32):
        print(f"gpu check: generation at batch {batch}", file=sys.stderr, flush=True)
        if importlib.util.find_spec("pydantic") is None:
            rows.append({"check": f"generate-bs{batch}", "status": "skipped: pydantic missing (the backend's "
                         "settings need it; scripts/gpu_check.sh --fetch-wheels brings it along)"})
            continue
        rows.append(check_generation(model_dir, batch, gen_tokens, cuda))

    rows.append(check_15b(args, cuda, total, device_name, work, tokenizer))
    return facts, rows


def check_15b(args, cuda: bool, total: int, device_name: str, work: Path, tokenizer) -> dict:
    """A few optimizer steps of the StarCoder2-15B shape at the paper's settings, where the memory allows."""
    import torch

    config = starcoder2_config(STARCODER2_15B, 1280)
    shape = shape_from_config(config.to_dict(), "starcoder2-15b")
    est = layout_estimate(shape, "ddp", 1, seq_len=1280, batch=1,
                          bf16=True, checkpointing=True, cuda=True)
    row = {"check": "train-15b", "params": shape.n_params, "seq_len": 1280, "estimate_gib": round(est.per_gpu / GIB, 2)}
    if args.dry or args.skip_15b:
        return row | {"status": "skipped: " + ("dry run" if args.dry else "--skip-15b")}
    if total < est.per_gpu:
        return row | {"status": f"skipped: the card has {total / GIB:.1f} GiB, the estimate asks {est.per_gpu / GIB:.1f}"}
    print("gpu check: train-15b", file=sys.stderr, flush=True)
    data = training_rows(tokenizer, 3, 1280)  # the 3B's tokenizer: the same 49152 ids
    try:
        model = build_model(config, torch.bfloat16, "cuda")
        measured, losses = train(model, tokenizer, data, steps=3, accumulation=1, bf16=True, cuda=True,
                                 out_dir=work / "train15b")
    except torch.cuda.OutOfMemoryError as exc:
        peak = torch.cuda.max_memory_allocated()
        free_memory()
        return row | {"peak_allocated_gib": round(peak / GIB, 2),
                      "status": f"out of memory ({str(exc).splitlines()[0][:160]})"}
    del model
    free_memory()
    return training_row("train-15b", config, "ddp", measured, seq_len=1280, accumulation=1, bf16=True, cuda=True,
                        device_name=device_name, losses=losses)


COLUMNS = [("check", 14), ("params", 8), ("estimate_gib", 12), ("peak_allocated_gib", 18),
           ("peak_reserved_gib", 17), ("tokens_per_s", 12), ("mfu", 6), ("status", 10)]


def format_table(facts: dict, rows: list[dict]) -> str:
    """The one table the check prints."""
    head = (f"GPU check on {facts['device']} ({facts['memory_gib']} GiB), torch {facts['torch']}, "
            f"transformers {facts['transformers']}, peft {facts['peft']}, {facts['dtype']}, "
            f"sequence {facts['seq_len']}{', DRY RUN (CPU, tiny model)' if facts['dry'] else ''}")
    lines = [head, "  ".join(f"{name:<{width}}" for name, width in COLUMNS)]
    for row in rows:
        cells = ["-" if row.get(name) is None else str(row[name]) for name, _ in COLUMNS]
        if row.get("params"):
            cells[1] = f"{row['params'] / 1e9:.2f}B" if row["params"] >= 1e8 else f"{row['params'] / 1e6:.1f}M"
        lines.append("  ".join(f"{cell:<{width}}" for cell, (_, width) in zip(cells, COLUMNS)))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: run the checks, print the table, write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="CPU rehearsal: tiny model, a few steps")
    parser.add_argument("--out", default=os.environ.get("GPU_CHECK_OUT", "gpu_check.json"),
                        help="where the JSON goes (default gpu_check.json, or $GPU_CHECK_OUT)")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps of the 3B runs (default 8)")
    parser.add_argument("--skip-15b", action="store_true", help="leave out the StarCoder2-15B steps")
    args = parser.parse_args(argv)
    started = time.time()
    facts, rows = run_checks(args)
    facts["wall_seconds"] = round(time.time() - started, 1)
    print(format_table(facts, rows))
    Path(args.out).write_text(json.dumps({"facts": facts, "rows": rows}, indent=1) + "\n")
    print(f"written: {args.out} ({facts['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
