"""A tiny random llama-architecture GGUF file, for fast tests of the llama.cpp engine (not a product feature).

:func:`build_tiny_gguf` writes, with the ``gguf`` package, a 2-layer llama
model (hidden size 64) with seeded random float32 weights and the byte-level
BPE tokenizer of :func:`tests.llm_fixtures.build_tiny_model` (its vocabulary,
merges, ``<eos>`` and chat template). llama.cpp loads it in well under a
second and generates deterministic gibberish, so the engine, the server and
the backend's process handling can be tested without the real model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.llm_fixtures import CHAT_TEMPLATE, build_tiny_model

__all__ = ["build_tiny_gguf", "tiny_gguf"]

_HIDDEN, _LAYERS, _HEADS, _KV_HEADS, _FFN = 64, 2, 4, 2, 128


def build_tiny_gguf(out_dir: str | Path, seed: int = 0) -> Path:
    """Write ``tiny-llama.gguf`` into ``out_dir`` and return its path."""
    import gguf

    out = Path(out_dir)
    tok_dir = build_tiny_model(out / "hf")
    spec = json.loads((tok_dir / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    special = {t["content"]: t["id"] for t in spec["added_tokens"]}
    types = [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]

    path = out / "tiny-llama.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-random-llama")
    writer.add_context_length(4096)
    writer.add_embedding_length(_HIDDEN)
    writer.add_block_count(_LAYERS)
    writer.add_feed_forward_length(_FFN)
    writer.add_head_count(_HEADS)
    writer.add_head_count_kv(_KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(special["<eos>"])
    writer.add_pad_token_id(special["<pad>"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    rng = np.random.default_rng(seed)

    def weight(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    n_vocab, head_dim = len(tokens), _HIDDEN // _HEADS
    writer.add_tensor("token_embd.weight", weight(n_vocab, _HIDDEN, scale=1.0))
    for i in range(_LAYERS):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(_HIDDEN, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(_HIDDEN, _HIDDEN))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(_KV_HEADS * head_dim, _HIDDEN))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(_KV_HEADS * head_dim, _HIDDEN))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(_HIDDEN, _HIDDEN))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(_HIDDEN, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(_FFN, _HIDDEN))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(_FFN, _HIDDEN))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(_HIDDEN, _FFN))
    writer.add_tensor("output_norm.weight", np.ones(_HIDDEN, dtype=np.float32))
    head = weight(n_vocab, _HIDDEN, scale=2.0)
    head[special["<eos>"]] = 0.0  # keep greedy decoding from ending at once, as the tiny HF model does
    writer.add_tensor("output.weight", head)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session-scoped path of the tiny random GGUF model."""
    return build_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf"))
