"""Fine-tuning throughput on CPU: padded batches vs length-grouped batches vs packed rows.

Data: conversations whose answers are functions of the Python standard
library (found with ``ast``), so lengths vary as real code answers do; the
instruction names the function. Model: the tiny random Llama of the test
fixtures (or ``--model DIR``). Each batching mode of the finetune stage runs
the stage's own code path (its encoder, its training rows, its
``TrainingArguments`` with Adafactor, transformers' Trainer) for the same
number of optimizer steps, and reports:

* conversation tokens trained per second (padding excluded) and token slots
  per second (padding included), over the Trainer's measured train runtime;
* the share of the batches' token slots that were padding, counted by the
  collator on every batch it built.

    python benchmarks/finetune.py [--steps 30] [--batch 8] [--max-length 512] [--model DIR]
"""

from __future__ import annotations

import argparse
import ast
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.training.data import ConversationDataset, ConversationEncoder, PaddingCollator  # noqa: E402
from pipeline.training.settings import FinetuneConfig  # noqa: E402
from pipeline.training.trainers import training_arguments, training_rows  # noqa: E402

MODES = ("pad", "group_by_length", "pack")


def stdlib_conversations(limit: int) -> list[list[dict]]:
    """Up to ``limit`` conversations: 'write function X of module Y' -> its source."""
    out: list[list[dict]] = []
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")):
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                code = ast.get_source_segment(source, node)
                if code and 3 <= code.count("\n") <= 60:
                    out.append([{"role": "user", "content": f"Write `{node.name}` as in the module {path.stem}."},
                                {"role": "assistant", "content": code}])
                    if len(out) >= limit:
                        return out
    return out


class CountingCollator(PaddingCollator):
    """The stage's collator, counting real tokens and token slots of every batch it builds."""

    def __init__(self, pad_token_id: int):
        super().__init__(pad_token_id)
        self.real = self.slots = 0

    def __call__(self, rows):
        batch = super().__call__(rows)
        self.real += sum(len(r["input_ids"]) for r in rows)
        self.slots += batch["input_ids"].numel()
        return batch


def run_mode(mode: str, model_dir: str, conversations: list[list[dict]], args, work: Path) -> dict:
    """Train ``args.steps`` optimizer steps with one batching mode; return its measurements."""
    import torch
    from transformers import AutoTokenizer, Trainer

    from pipeline.training.modeling import load_for_training

    config = FinetuneConfig(batching=mode, per_device_batch_size=args.batch, gradient_accumulation_steps=1,
                            max_length=args.max_length, max_steps=args.steps, learning_rate=1e-4,
                            gradient_checkpointing=args.checkpointing, save_steps=10**6, logging_steps=10**6,
                            use_default_system=False)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoder = ConversationEncoder(tokenizer, "instruction", use_default_system=False)
    examples = [e for e in (encoder.encode(c, args.max_length) for c in conversations) if e.kept]
    rows = training_rows(config, examples)
    model, _ = load_for_training(model_dir, torch.float32, 0.0, len(tokenizer))
    collator = CountingCollator(tokenizer.pad_token_id)
    training_args = training_arguments(config, work / mode, bf16=False, cuda=False, seed=0)
    training_args.disable_tqdm = True
    training_args.save_strategy = "no"
    trainer = Trainer(model=model, args=training_args, train_dataset=ConversationDataset(rows),
                      data_collator=collator, processing_class=tokenizer)
    started = time.perf_counter()
    metrics = trainer.train().metrics
    seconds = metrics.get("train_runtime") or (time.perf_counter() - started)
    return {"mode": mode, "rows": len(rows), "conversations": len(examples), "steps": trainer.state.global_step,
            "tokens_per_s": collator.real / seconds, "slots_per_s": collator.slots / seconds,
            "padding": 1 - collator.real / collator.slots if collator.slots else 0.0, "seconds": seconds}


def main() -> None:
    """Run every batching mode and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per mode")
    parser.add_argument("--batch", type=int, default=8, help="rows per step")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per row at most")
    parser.add_argument("--conversations", type=int, default=600, help="stdlib functions to train on")
    parser.add_argument("--checkpointing", action="store_true", help="turn gradient checkpointing on")
    parser.add_argument("--model", help="model directory (default: the tiny random test model)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = parser.parse_args()
    import torch

    conversations = stdlib_conversations(args.conversations)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = args.model
        if model_dir is None:
            from tests.llm_fixtures import build_tiny_model

            model_dir = str(build_tiny_model(work / "tiny"))
        print(f"model {Path(model_dir).name}, {len(conversations)} conversations, batch {args.batch}, "
              f"max_length {args.max_length}, {args.steps} steps per mode, checkpointing "
              f"{'on' if args.checkpointing else 'off'}, torch {torch.__version__}, {torch.get_num_threads()} threads")
        results = [run_mode(mode, model_dir, conversations, args, work) for mode in args.modes]
    print(f"{'batching':<16} {'rows':>6} {'steps':>6} {'tokens/s':>10} {'slots/s':>10} {'padding':>8} {'seconds':>8}")
    for r in results:
        print(f"{r['mode']:<16} {r['rows']:>6} {r['steps']:>6} {r['tokens_per_s']:>10.0f} {r['slots_per_s']:>10.0f} "
              f"{r['padding']:>8.1%} {r['seconds']:>8.1f}")
    base = results[0]
    for r in results[1:]:
        print(f"{r['mode']}: {r['tokens_per_s'] / base['tokens_per_s']:.2f}x the tokens/s of {base['mode']}")


if __name__ == "__main__":
    main()
