"""Benchmark: the llama.cpp engine's KV layout, attention and step order, ours vs the alternative, side by side.

With one shared stream (llama.cpp's ``kv_unified``), every decode step
attends over the cells of every busy slot, masked; with a stream per
sequence it attends over the sequence's own cells only. The difference grows
with the prompts' and answers' length, which is what the responses stage
generates: a few-shot prompt of several hundred tokens and answers of
several hundred more. This script decodes the same workload both ways in one
run, alternating (so both see the same load on a shared machine), and prints
the wall time, tokens/s, and the ratio.

    python benchmarks/llamacpp_kv.py                       # Qwen2.5-Coder-0.5B-Instruct, 16 sequences x 384 tokens
    python benchmarks/llamacpp_kv.py --model tiny          # the tiny random GGUF of the tests (seconds)
    python benchmarks/llamacpp_kv.py --compare attention   # ours (plain attention, 8-bit K cache) vs
                                                           # llama.cpp's default (flash attention, f16 K)
    python benchmarks/llamacpp_kv.py --compare order       # steps in stream order, sequences moved down
                                                           # (ours) vs steps in admission order
    python benchmarks/llamacpp_kv.py --compare weights     # the GGUF as shipped vs its weights exported
                                                           # at q8_0 (model.gguf_weights)

``--compare order`` runs the responses stage's shape: ``--samples`` answers
per prompt (one request each, sharing the prompt), more sequences than slots
(a freed slot takes the next one), answers of different lengths. llama.cpp
decodes a batch over separate KV streams in runs of consecutive stream ids,
one pass over the weights per run, so the order of a step's sequences
matters once slots free and refill out of order.

The answers are sampled (temperature 0.7, seeded), so both ways generate
tokens of the same kind; each sequence stops at ``--max-tokens`` or at the
model's end of turn, and tokens/s counts what was generated.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.llm.llamacpp_engine import LlamaCppEngine, SequenceJob  # noqa: E402


def model_path(name: str, workdir: Path) -> str:
    """The GGUF to serve: the Qwen package model, the tests' tiny model, or a path."""
    if name == "qwen":
        from pipeline.llm.config import QWEN_CODER_GGUF_MODEL
        from pipeline.llm.models import resolve_model

        return resolve_model(QWEN_CODER_GGUF_MODEL)
    if name == "tiny":
        from tests.gguf_fixtures import build_tiny_gguf

        return str(build_tiny_gguf(workdir))
    return name


def workload(engine: LlamaCppEngine, count: int, prompt_chars: int) -> list[list[int]]:
    """``count`` distinct chat prompts of about ``prompt_chars`` characters: real source code to explain."""
    source = (ROOT / "pipeline" / "llm" / "llamacpp_engine.py").read_text()
    prompts = []
    for i in range(count):
        start = (i * 397) % max(1, len(source) - prompt_chars)
        text = (f"<|im_start|>user\nRewrite this code more simply, then write tests for it ({i}):\n"
                f"{source[start:start + prompt_chars]}<|im_end|>\n<|im_start|>assistant\n")
        prompts.append(engine.tokenize(text))
    return prompts


def decode(engine: LlamaCppEngine, prompts: list[list[int]], max_tokens: int, samples: int = 1,
           spread: bool = False) -> tuple[float, int]:
    """Generate ``samples`` answers per prompt, all queued at once; returns seconds and tokens generated.

    With ``spread``, answers' limits run from half ``max_tokens`` to all of it (different lengths, as in a stage).
    """
    jobs = []
    for i, p in enumerate(prompts):
        request = object()
        for _ in range(samples):
            n = len(jobs)
            limit = max_tokens // 2 + (n * 37) % (max_tokens // 2 + 1) if spread else max_tokens
            jobs.append(SequenceJob(tokens=p, max_tokens=limit, temperature=0.7, top_p=0.95, seed=n, group=request))
    started = time.perf_counter()
    engine.submit(jobs)
    for job in jobs:
        job.done.wait()
    return time.perf_counter() - started, sum(j.completion_tokens for j in jobs)


def main() -> None:
    """Run both variants on the same workload, alternating, and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen", help="'qwen', 'tiny' or a .gguf path")
    ap.add_argument("--sequences", type=int, default=16, help="sequences decoded together (slots)")
    ap.add_argument("--prompt-chars", type=int, default=2000, help="characters of each prompt (~500 tokens)")
    ap.add_argument("--max-tokens", type=int, default=384)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="alternations of the two layouts")
    ap.add_argument("--samples", type=int, default=4, help="with --compare order: answers per prompt")
    ap.add_argument("--compare", choices=list(COMPARISONS), default="kv",
                    help="kv: a KV stream per sequence vs one shared stream; attention: plain attention over an "
                         "8-bit K cache vs flash attention over f16 (both with a stream per sequence); order: "
                         "steps in stream order vs admission order, on --samples answers per prompt; weights: the GGUF "
                         "as shipped vs exported at q8_0")
    args = ap.parse_args()
    variants = COMPARISONS[args.compare]
    with tempfile.TemporaryDirectory() as tmp:
        path = model_path(args.model, Path(tmp))
        totals = {label: [0.0, 0] for label, _ in variants}
        stage_shape = args.compare == "order"
        for _ in range(args.rounds):
            for label, options in variants:
                options = dict(options)
                engine_class = options.pop("engine", LlamaCppEngine)
                served = exported(path, options.pop("weights", "keep"))
                engine = engine_class(served, threads=args.threads, slots=args.sequences, ctx_per_slot=2048,
                                      **options).start()
                try:
                    seconds, tokens = decode(engine, workload(engine, args.sequences, args.prompt_chars),
                                             args.max_tokens, samples=args.samples if stage_shape else 1,
                                             spread=stage_shape)
                finally:
                    engine.stop()
                totals[label][0] += seconds
                totals[label][1] += tokens
    print(f"{args.compare:<34} {'wall':>8} {'tokens':>8} {'tokens/s':>9}")
    for label, _ in variants:
        seconds, tokens = totals[label]
        print(f"{label:<34} {seconds:>7.1f}s {tokens:>8} {tokens / seconds:>9.1f}")
    (baseline, _), *others = variants
    for label, _ in others:
        ratio = (totals[label][1] / totals[label][0]) / (totals[baseline][1] / totals[baseline][0])
        print(f"{label} / {baseline} tokens/s: {ratio:.2f}x")


def exported(path: str, weights: str) -> str:
    """The GGUF the llamacpp backend would serve for ``path`` at ``gguf_weights=weights`` (``keep``: ``path``)."""
    from pipeline.llm.config import LLMConfig
    from pipeline.llm.llamacpp_backend import served_gguf

    return served_gguf(LLMConfig(backend="llamacpp", model=path, gguf_weights=weights))


class AdmissionOrderEngine(LlamaCppEngine):
    """The engine as it was: a step decodes its sequences in the order they were admitted, none ever moves."""

    def _step_order(self):
        """Busy sequences in admission order (a refilled slot goes last)."""
        return list(self.busy.values())

    def _compact(self) -> None:
        """Never move a sequence."""


COMPARISONS = {
    "kv": [("one stream, all slots", {"shared_kv": True}), ("a stream per sequence (ours)", {})],
    "attention": [("flash attention, f16 K", {"fast_attention": False}),
                  ("plain attention, 8-bit K (ours)", {})],
    "order": [("admission order", {"engine": AdmissionOrderEngine}),
              ("stream order, moved down (ours)", {})],
    "weights": [("the GGUF as shipped", {}), ("exported at q8_0", {"weights": "q8_0"})],
}


if __name__ == "__main__":
    main()
